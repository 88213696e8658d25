//! Running iptables (or ip6tables), with either backend, and reporting each command.

use std::io::Write;
use std::process::Command;

use super::{INBOUND_CHAIN, OUTPUT_CHAIN, Rules, parent};

/// Which iptables implementation to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `iptables` (whichever the system's alternatives choose).
    Auto,
    /// `iptables-nft`: the nf_tables kernel API.
    Nft,
    /// `iptables-legacy`: the x_tables kernel API.
    Legacy,
}

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Whether `cidr` is of this family.
    pub fn holds(self, cidr: &str) -> bool {
        cidr.contains(':') == (self == Self::V6)
    }
}

/// Why the rules could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The program is not there or cannot run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed; says which, and what it printed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its error output.
        stderr: String,
    },
}

/// One iptables program (a backend and a family), reporting every command to `log`.
pub struct Iptables<'a> {
    program: String,
    log: &'a mut dyn Write,
}

impl<'a> Iptables<'a> {
    /// The program for `backend` and `family`, reporting to `log`.
    pub fn new(backend: Backend, family: Family, log: &'a mut dyn Write) -> Self {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let program = match backend {
            Backend::Auto => base.to_owned(),
            Backend::Nft => format!("{base}-nft"),
            Backend::Legacy => format!("{base}-legacy"),
        };
        Self { program, log }
    }

    /// Installs `rules` (for `family`): both chains flushed and refilled, each jump added
    /// unless it is there.
    pub fn install(&mut self, rules: &Rules, family: Family) -> Result<(), InitError> {
        for (chain, chain_rules) in rules.chains(family) {
            if !self.exists(chain)? {
                self.run(&["-t", "nat", "-N", chain])?;
            }
            self.run(&["-t", "nat", "-F", chain])?;
            for rule in chain_rules {
                let mut line = vec!["-t", "nat", "-A", chain];
                line.extend(rule.iter().map(String::as_str));
                self.run(&line)?;
            }
            let jump = ["-p", "tcp", "-j", chain];
            if !self.check(&[&["-t", "nat", "-C", parent(chain)][..], &jump].concat())? {
                self.run(&[&["-t", "nat", "-A", parent(chain)][..], &jump].concat())?;
            }
        }
        Ok(())
    }

    /// Removes the jumps and both chains; what is not there is skipped.
    pub fn uninstall(&mut self) -> Result<(), InitError> {
        for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
            let jump = ["-p", "tcp", "-j", chain];
            // A jump added twice by hand is removed twice.
            while self.check(&[&["-t", "nat", "-C", parent(chain)][..], &jump].concat())? {
                self.run(&[&["-t", "nat", "-D", parent(chain)][..], &jump].concat())?;
            }
            if self.exists(chain)? {
                self.run(&["-t", "nat", "-F", chain])?;
                self.run(&["-t", "nat", "-X", chain])?;
            }
        }
        Ok(())
    }

    /// The `nat` table's rules, as `-S` prints them.
    pub fn list(&mut self) -> Result<String, InitError> {
        let (ok, stdout, stderr) = self.exec(&["-t", "nat", "-S"])?;
        if ok {
            Ok(stdout)
        } else {
            Err(self.failed(&["-t", "nat", "-S"], stderr))
        }
    }

    fn exists(&mut self, chain: &str) -> Result<bool, InitError> {
        Ok(self.exec(&["-t", "nat", "-S", chain])?.0)
    }

    /// Runs a `-C` check: whether the rule is there.
    fn check(&mut self, args: &[&str]) -> Result<bool, InitError> {
        Ok(self.exec(args)?.0)
    }

    /// Runs a change, reporting it; a failure is an error.
    fn run(&mut self, args: &[&str]) -> Result<(), InitError> {
        let (ok, _, stderr) = self.exec(args)?;
        let line = format!("{} {}", self.program, args.join(" "));
        if ok {
            let _ = writeln!(self.log, "ok: {line}");
            Ok(())
        } else {
            let _ = writeln!(self.log, "failed: {line}: {}", stderr.trim());
            Err(self.failed(args, stderr))
        }
    }

    fn exec(&mut self, args: &[&str]) -> Result<(bool, String, String), InitError> {
        let out = Command::new(&self.program)
            .args(["-w", "5"])
            .args(args)
            .output()
            .map_err(|source| InitError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn failed(&self, args: &[&str], stderr: String) -> InitError {
        InitError::Failed {
            command: format!("{} {}", self.program, args.join(" ")),
            stderr: stderr.trim().to_owned(),
        }
    }
}
