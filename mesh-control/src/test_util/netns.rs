//! A network namespace for the tests of one test binary, so that pods can have addresses the
//! API server accepts in EndpointSlices (it refuses loopback) without touching the host's
//! network: `10.244.0.2` to `10.244.0.40` on the namespace's own loopback device.
//!
//! [`run`] moves the test's thread into it before building the test's runtime: threads and
//! processes started from there (the runtime's workers, etcd and kube-apiserver) inherit it.
//! The namespace is removed when the test process exits, however it exits.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The first and last host numbers given to the namespace's loopback.
const HOSTS: std::ops::RangeInclusive<u8> = 2..=40;

/// The address of pod `n` (2 to 40) in the test network.
pub fn pod_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 244, 0, n))
}

/// The namespace of this test binary.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    // Holds the pipe whose closing (at exit) makes the reaper remove the namespace.
    _reaper: Mutex<(Child, ChildStdin)>,
}

static SHARED: OnceLock<Result<TestNetns, String>> = OnceLock::new();

impl TestNetns {
    /// The namespace, created on first use. Panics (a fixture) if it cannot be made: that
    /// needs root and iproute2.
    pub fn shared() -> &'static TestNetns {
        match SHARED.get_or_init(Self::create) {
            Ok(netns) => netns,
            Err(error) => panic!("the test network namespace: {error}"),
        }
    }

    fn create() -> Result<Self, String> {
        let name = format!("mesh-test-{}", std::process::id());
        ip(&["netns", "add", &name])?;
        // The reaper first, so that a failure below still removes the namespace.
        let mut reaper = Command::new("bash")
            .arg("-c")
            .arg(r#"read -r _; ip netns del "$1""#)
            .arg("reaper")
            .arg(&name)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting the reaper: {e}"))?;
        let stdin = reaper.stdin.take().ok_or("the reaper has no stdin")?;
        let netns = Self {
            name: name.clone(),
            _reaper: Mutex::new((reaper, stdin)),
        };
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        for n in HOSTS {
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{}/32", pod_ip(n)),
                "dev",
                "lo",
            ])?;
        }
        Ok(netns)
    }

    /// Its name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into it.
    pub fn enter(&self) -> std::io::Result<()> {
        let file = File::open(format!("/run/netns/{}", self.name))?;
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(std::io::Error::from)
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `test` on a multi-threaded runtime inside the test network namespace. Use it instead
/// of `#[tokio::test]` in every test of a binary that uses [`KubeFixture`](super::KubeFixture).
pub fn run<F: Future>(test: F) -> F::Output {
    if let Err(error) = TestNetns::shared().enter() {
        panic!("entering the test network namespace: {error}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(test),
        Err(error) => panic!("building the test runtime: {error}"),
    }
}
