//! The init step of transparent interception: `mesh-init --proxy-uid 2102` (as root, in the
//! pod's network namespace) installs the iptables rules that send the app's TCP through its
//! proxy; `mesh-init --uninstall` removes them. Every command run is printed with its outcome.
//!
//! Exit codes: 0 when every rule is in place (or gone), 1 when a command failed (the message
//! says which and what iptables said), 2 for bad arguments.

use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use examples::init::{Backend, Family, Iptables, Rules};

/// Installs (or removes) the iptables rules of transparent interception.
#[derive(Debug, Parser)]
#[command(name = "mesh-init", version)]
struct Args {
    /// The proxy's inbound listener port.
    #[arg(long, default_value_t = 4143)]
    inbound_port: u16,
    /// The proxy's outbound listener port.
    #[arg(long, default_value_t = 4140)]
    outbound_port: u16,
    /// The UID the proxy runs as (its own connections are not redirected).
    #[arg(long)]
    proxy_uid: Option<u32>,
    /// The proxy's admin port: never redirected inbound.
    #[arg(long, default_value_t = 4191)]
    admin_port: u16,
    /// More inbound ports to leave alone (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip_inbound_ports: Vec<u16>,
    /// Outbound ports to leave alone (comma-separated): the control plane, DNS over TCP...
    #[arg(long, value_delimiter = ',')]
    skip_outbound_ports: Vec<u16>,
    /// Outbound destinations to leave alone, as CIDRs (comma-separated, IPv4 or IPv6).
    #[arg(long, value_delimiter = ',')]
    skip_outbound_cidrs: Vec<String>,
    /// Which iptables to run.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Also install the IPv6 rules (ip6tables).
    #[arg(long)]
    ipv6: bool,
    /// Remove the rules instead.
    #[arg(long)]
    uninstall: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendArg {
    Auto,
    Nft,
    Legacy,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let backend = match args.backend {
        BackendArg::Auto => Backend::Auto,
        BackendArg::Nft => Backend::Nft,
        BackendArg::Legacy => Backend::Legacy,
    };
    let families: &[Family] = if args.ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    };
    let mut skip_inbound = vec![args.admin_port];
    skip_inbound.extend(&args.skip_inbound_ports);
    for cidr in &args.skip_outbound_cidrs {
        if cidr.parse::<std::net::IpAddr>().is_err()
            && cidr.split_once('/').is_none_or(|(ip, len)| {
                ip.parse::<std::net::IpAddr>().is_err() || len.parse::<u8>().is_err()
            })
        {
            eprintln!("mesh-init: --skip-outbound-cidrs: `{cidr}` is not an address or CIDR");
            return ExitCode::from(2);
        }
    }
    let rules = match (args.uninstall, args.proxy_uid) {
        (true, _) => None,
        (false, Some(proxy_uid)) => Some(Rules {
            inbound_port: args.inbound_port,
            outbound_port: args.outbound_port,
            proxy_uid,
            skip_inbound_ports: skip_inbound,
            skip_outbound_ports: args.skip_outbound_ports.clone(),
            skip_outbound_cidrs: args.skip_outbound_cidrs.clone(),
        }),
        (false, None) => {
            eprintln!(
                "mesh-init: --proxy-uid is required: the proxy's own connections must not be redirected into itself"
            );
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout();
    for &family in families {
        let mut iptables = Iptables::new(backend, family, &mut out);
        let done = match &rules {
            Some(rules) => iptables.install(rules, family),
            None => iptables.uninstall(),
        };
        if let Err(e) = done {
            eprintln!("mesh-init: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!(
        "mesh-init: {} ({:?}, {})",
        if rules.is_some() {
            "rules installed"
        } else {
            "rules removed"
        },
        args.backend,
        if args.ipv6 { "IPv4 and IPv6" } else { "IPv4" }
    );
    ExitCode::SUCCESS
}
