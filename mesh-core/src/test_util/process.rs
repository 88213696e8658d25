//! Child processes that cannot outlive the test process.
//!
//! Each program runs under a small bash wrapper that waits on its stdin: the test process holds
//! the other end of the pipe, so when it exits (passing, failing, or killed) the pipe closes,
//! the wrapper kills the program and removes the fixture's files. Statics are never dropped, so
//! `Drop` alone could not promise this. Set `MESH_TEST_KEEP=1` to keep the files (logs, data
//! directories) for a post-mortem.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

/// Starts `"$@"` in the background, waits for stdin to close, then kills it and removes the
/// directory given as `$CLEANUP` (if any).
const WRAPPER: &str = r#""$@" & child=$!
read -r _
kill -KILL "$child" 2>/dev/null
wait "$child" 2>/dev/null
if [ -n "$CLEANUP" ] && [ -z "$MESH_TEST_KEEP" ]; then rm -rf "$CLEANUP"; fi"#;

/// A program under the wrapper; dropping it stops the program (and waits for it to be gone).
#[derive(Debug)]
pub struct Supervised {
    stdin: Option<ChildStdin>,
    wrapper: Child,
}

impl Supervised {
    /// Starts `program` with `args`, its output appended to `log`; `cleanup`, if any, is
    /// removed when it stops.
    pub fn spawn(
        program: &Path,
        args: &[String],
        log: &Path,
        cleanup: Option<&Path>,
    ) -> std::io::Result<Self> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut wrapper = Command::new("bash")
            .arg("-c")
            .arg(WRAPPER)
            .arg("supervise")
            .arg(program)
            .args(args)
            .env("CLEANUP", cleanup.map(Path::as_os_str).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(Self {
            stdin: wrapper.stdin.take(),
            wrapper,
        })
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
    }
}

/// A port nobody listens on now (the race with other programs is accepted in tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
