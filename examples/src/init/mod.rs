//! Transparent interception's init step (`mesh-init`): iptables rules in the pod's network
//! namespace that send the app's TCP through its proxy, as Linkerd's proxy-init does.
//!
//! Two chains in the `nat` table, each reached by one jump rule:
//!
//! - `MESH_INBOUND`, from `PREROUTING`: TCP arriving for the pod is redirected to the proxy's
//!   inbound listener, except the skipped ports (the proxy's admin port always).
//! - `MESH_OUTPUT`, from `OUTPUT`: TCP the pod sends is redirected to the proxy's outbound
//!   listener, except the proxy's own (by its UID, so it never loops into itself), loopback,
//!   and the skipped ports and CIDRs.
//!
//! Installing flushes and refills both chains and adds each jump only if it is not there: run
//! twice, the rules are the same. Uninstalling removes the jumps and the chains, and nothing
//! else. Each command and its outcome are reported.

mod iptables;

pub use self::iptables::{Backend, Family, InitError, Iptables};

/// The chain `PREROUTING` jumps to.
pub const INBOUND_CHAIN: &str = "MESH_INBOUND";
/// The chain `OUTPUT` jumps to.
pub const OUTPUT_CHAIN: &str = "MESH_OUTPUT";

/// What to redirect where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// The proxy's inbound listener port.
    pub inbound_port: u16,
    /// The proxy's outbound listener port.
    pub outbound_port: u16,
    /// The UID the proxy runs as: its connections are never redirected.
    pub proxy_uid: u32,
    /// Inbound ports left alone (the proxy's admin port, say).
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound ports left alone (the control plane's, DNS over TCP, say).
    pub skip_outbound_ports: Vec<u16>,
    /// Outbound destinations left alone, as CIDRs (IPv4 or IPv6; each applies to its family).
    pub skip_outbound_cidrs: Vec<String>,
}

impl Rules {
    /// The rules of each chain, in order, as iptables arguments after `-t nat -A <chain>`.
    pub fn chains(&self, family: Family) -> [(&'static str, Vec<Vec<String>>); 2] {
        let mut inbound = Vec::new();
        for port in &self.skip_inbound_ports {
            inbound.push(args(&[
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-j",
                "RETURN",
            ]));
        }
        inbound.push(redirect(self.inbound_port));
        let loopback = match family {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        };
        let mut output = vec![
            args(&[
                "-m",
                "owner",
                "--uid-owner",
                &self.proxy_uid.to_string(),
                "-j",
                "RETURN",
            ]),
            args(&["-o", "lo", "-j", "RETURN"]),
            args(&["-d", loopback, "-j", "RETURN"]),
        ];
        for port in &self.skip_outbound_ports {
            output.push(args(&[
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-j",
                "RETURN",
            ]));
        }
        for cidr in self.skip_outbound_cidrs.iter().filter(|c| family.holds(c)) {
            output.push(args(&["-d", cidr, "-j", "RETURN"]));
        }
        output.push(redirect(self.outbound_port));
        [(INBOUND_CHAIN, inbound), (OUTPUT_CHAIN, output)]
    }
}

/// The built-in chain each of ours hangs from.
pub(crate) fn parent(chain: &str) -> &'static str {
    if chain == INBOUND_CHAIN {
        "PREROUTING"
    } else {
        "OUTPUT"
    }
}

/// The last rule of a chain: every TCP connection that got this far goes to `port`.
fn redirect(port: u16) -> Vec<String> {
    args(&[
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &port.to_string(),
    ])
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}
