//! `mesh-ca`: a development certificate authority on the command line.
//!
//! ```sh
//! cargo run -p examples --example mesh-ca -- init --dir ./ca --trust-domain mesh.local
//! cargo run -p examples --example mesh-ca -- issue spiffe://mesh.local/ns/default/sa/web \
//!     --dir ./ca --out ./web --valid-for 24h
//! ```
//!
//! `init` writes `ca.pem` (the trust root) and `ca-key.pem`; `issue` writes `cert.pem`,
//! `key.pem` and `roots.pem`, the files mesh-tls' `CredentialFiles::in_dir` reads and watches.
//! For development and tests only: the CA key sits in a plain file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use mesh_core::Identity;
use mesh_tls::{DevCa, KeyAlgorithm};

#[derive(Parser)]
#[command(
    name = "mesh-ca",
    about = "A development CA for mesh workload certificates"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a trust root: `ca.pem` and `ca-key.pem` in DIR.
    Init {
        /// Where to write the CA.
        #[arg(long, default_value = "mesh-ca")]
        dir: PathBuf,
        /// The trust domain the CA serves (its name says so).
        #[arg(long, default_value = "mesh.local")]
        trust_domain: String,
    },
    /// Issues a workload certificate for IDENTITY (a SPIFFE ID or a DNS name).
    Issue {
        /// The workload identity.
        identity: String,
        /// Where the CA is (as written by `init`).
        #[arg(long, default_value = "mesh-ca")]
        dir: PathBuf,
        /// Where to write `cert.pem`, `key.pem` and `roots.pem` (default: DIR/<last segment>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How long the certificate is valid: a number with `s`, `m`, `h` or `d`.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        valid_for: Duration,
        /// The key algorithm.
        #[arg(long, value_enum, default_value_t = Algorithm::P256)]
        algorithm: Algorithm,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Algorithm {
    /// ECDSA P-256 (default).
    P256,
    /// ECDSA P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.len().saturating_sub(1);
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number followed by s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    let seconds = n
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too long"))?;
    if seconds == 0 {
        return Err("the validity must be longer than zero".into());
    }
    Ok(Duration::from_secs(seconds))
}

fn run(args: Args) -> Result<String, Box<dyn std::error::Error>> {
    match args.command {
        Command::Init { dir, trust_domain } => {
            let ca = DevCa::new(&trust_domain)?;
            ca.write(&dir)?;
            Ok(format!(
                "wrote {} and {}",
                dir.join("ca.pem").display(),
                dir.join("ca-key.pem").display()
            ))
        }
        Command::Issue {
            identity,
            dir,
            out,
            valid_for,
            algorithm,
        } => {
            let identity = Identity::parse(&identity)?;
            let read = |file: &str| {
                let path = dir.join(file);
                std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "cannot read {}: {e} (run `mesh-ca init` first)",
                        path.display()
                    )
                })
            };
            let algorithm = match algorithm {
                Algorithm::P256 => KeyAlgorithm::EcdsaP256,
                Algorithm::P384 => KeyAlgorithm::EcdsaP384,
                Algorithm::Ed25519 => KeyAlgorithm::Ed25519,
            };
            let ca =
                DevCa::from_pem(&read("ca.pem")?, &read("ca-key.pem")?)?.with_algorithm(algorithm);
            let issued = ca.issue(&identity, valid_for)?;
            let name = identity
                .as_str()
                .rsplit(['/', ':'])
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("workload")
                .to_owned();
            let out = out.unwrap_or_else(|| dir.join(name));
            issued.write(&out)?;
            Ok(format!(
                "issued {identity}, valid for {}s: {}/{{cert,key,roots}}.pem",
                valid_for.as_secs(),
                out.display()
            ))
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("mesh-ca: {err}");
            ExitCode::FAILURE
        }
    }
}
