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

/// The lowest port of the kernel's ephemeral range when it cannot be read (Linux's default).
const EPHEMERAL_LOW: u16 = 32768;

/// The lowest port this hands out: below it are the well-known and commonly configured ports.
const LOWEST: u16 = 10_000;

/// A port nobody listens on now, for a program a test starts, below the kernel's ephemeral
/// range. A port the kernel picked for `bind(0)` is from that range, where any outgoing
/// connection may take it as its local port before the program binds it: a kube-apiserver
/// that opens its connections to etcd before it listens, say, then finds its port taken and
/// exits. Successive calls in one process give different ports (from a random start); the
/// race with other programs binding explicit ports is accepted in tests.
pub fn free_port() -> std::io::Result<u16> {
    use crate::random::{Random, ThreadRandom};
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    // 0 until the first call picks where this process starts.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = ephemeral_low().unwrap_or(EPHEMERAL_LOW).max(LOWEST + 1);
    let span = u32::from(high - LOWEST);
    let start = u32::try_from(ThreadRandom.below(span as usize)).unwrap_or(0) + 1;
    let _ = NEXT.compare_exchange(0, start, Relaxed, Relaxed);
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Relaxed) % span;
        let Ok(port) = u16::try_from(u32::from(LOWEST) + offset) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first port of `net.ipv4.ip_local_port_range`, if it can be read.
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable_distinct_and_below_the_ephemeral_range() {
        let low = ephemeral_low().unwrap_or(EPHEMERAL_LOW);
        let ports: Vec<u16> = (0..20).map(|_| free_port().expect("a port")).collect();
        for &port in &ports {
            assert!(
                (LOWEST..low).contains(&port),
                "{port} not in {LOWEST}..{low}"
            );
            TcpListener::bind(("127.0.0.1", port)).expect("still free");
        }
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }
}
