//! A real SPIRE server and agent on this machine, for tests of the SPIFFE credential source.
//!
//! The binaries are SPIRE's own release, built from the Go module proxy by `tests/spire/build.sh`
//! (which `.ci/run` calls) into `$HOME/.cache/mesh/spire-<version>`, or wherever
//! `MESH_SPIRE_BIN` says. The server keeps its data in sqlite and its keys in memory; the agent
//! attests with a join token and keeps its own SVID and key on disk, so that it can be stopped
//! and started again without a new token. Workloads are attested by the agent's `unix`
//! attestor, which reports each process's executable path (`unix:path:...`): two copies of one
//! binary at two paths are two workloads.
//!
//! Both programs run under [`Supervised`]: they stop, and their files go, when the test process
//! exits however it exits.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mesh_core::Identity;
use mesh_core::test_util::{Supervised, free_port};

/// The SPIRE release the tests run against (and `tests/spire/build.sh` builds).
pub const SPIRE_VERSION: &str = "1.13.3";

/// What went wrong setting SPIRE up.
#[derive(Debug, thiserror::Error)]
pub enum SpireError {
    /// The binaries are not built.
    #[error(
        "spire-server and spire-agent {SPIRE_VERSION} are not in {0}: run tests/spire/build.sh (.ci/run does)"
    )]
    NotBuilt(PathBuf),
    /// A file or process could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A SPIRE command failed, or a program did not become healthy in time.
    #[error("{what}: {detail}")]
    Spire {
        /// What was being done.
        what: String,
        /// Its output, or the log's end.
        detail: String,
    },
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct SpireOptions {
    /// The trust domain. `mesh.spire` by default.
    pub trust_domain: String,
    /// The server's `default_x509_svid_ttl` (entries may set their own). 2 minutes by default.
    pub svid_ttl: Duration,
}

impl Default for SpireOptions {
    fn default() -> Self {
        Self {
            trust_domain: "mesh.spire".into(),
            svid_ttl: Duration::from_secs(120),
        }
    }
}

/// A running SPIRE server, and its agent when it runs.
#[derive(Debug)]
pub struct Spire {
    dir: PathBuf,
    bins: PathBuf,
    trust_domain: String,
    _server: Supervised,
    agent: Mutex<Option<Supervised>>,
    /// Set once the join token has been used: later starts reuse the agent's stored SVID.
    attested: Mutex<bool>,
    server_port: u16,
}

impl Spire {
    /// Where the binaries are: `MESH_SPIRE_BIN`, else `$HOME/.cache/mesh/spire-<version>`.
    pub fn binaries() -> PathBuf {
        std::env::var_os("MESH_SPIRE_BIN").map_or_else(
            || {
                let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
                PathBuf::from(home).join(format!(".cache/mesh/spire-{SPIRE_VERSION}"))
            },
            PathBuf::from,
        )
    }

    /// Starts a server and an agent attested to it, and waits until both are healthy.
    pub async fn start(options: SpireOptions) -> Result<Self, SpireError> {
        let spire = Self::start_server(options).await?;
        spire.start_agent().await?;
        Ok(spire)
    }

    /// Starts a server only; [`Spire::start_agent`] starts the agent later.
    pub async fn start_server(options: SpireOptions) -> Result<Self, SpireError> {
        let bins = Self::binaries();
        if !bins.join("spire-server").is_file() || !bins.join("spire-agent").is_file() {
            return Err(SpireError::NotBuilt(bins));
        }
        let dir = scratch_dir()?;
        let server_port = free_port().map_err(io("finding a free port"))?;
        let config = server_config(&dir, server_port, &options);
        let file = dir.join("server.conf");
        std::fs::write(&file, config).map_err(io("writing server.conf"))?;
        let server = Supervised::spawn(
            &bins.join("spire-server"),
            &["run".into(), "-config".into(), file.display().to_string()],
            &dir.join("server.log"),
            Some(&dir),
        )
        .map_err(io("starting spire-server"))?;
        let spire = Self {
            dir,
            bins,
            trust_domain: options.trust_domain,
            _server: server,
            agent: Mutex::new(None),
            attested: Mutex::new(false),
            server_port,
        };
        spire
            .wait_healthy(
                "spire-server",
                &["-socketPath", &spire.server_socket()],
                "server.log",
            )
            .await?;
        Ok(spire)
    }

    /// Starts the agent (attesting with a new join token the first time) and waits until its
    /// Workload API answers health checks.
    pub async fn start_agent(&self) -> Result<(), SpireError> {
        let mut args = vec![
            "run".to_owned(),
            "-config".to_owned(),
            self.dir.join("agent.conf").display().to_string(),
        ];
        let first = !*lock(&self.attested);
        if first {
            let config = agent_config(&self.dir, self.server_port, &self.trust_domain);
            std::fs::write(self.dir.join("agent.conf"), config)
                .map_err(io("writing agent.conf"))?;
            let node = format!("spiffe://{}/node", self.trust_domain);
            let out = self
                .server_cli(&["token", "generate", "-spiffeID", &node, "-ttl", "3600"])
                .await?;
            let token = out
                .split_whitespace()
                .skip_while(|w| *w != "Token:")
                .nth(1)
                .ok_or_else(|| SpireError::Spire {
                    what: "generating a join token".into(),
                    detail: out.clone(),
                })?
                .to_owned();
            args.extend(["-joinToken".to_owned(), token]);
        }
        let agent = Supervised::spawn(
            &self.bins.join("spire-agent"),
            &args,
            &self.dir.join("agent.log"),
            None,
        )
        .map_err(io("starting spire-agent"))?;
        *lock(&self.agent) = Some(agent);
        self.wait_healthy(
            "spire-agent",
            &["-socketPath", &self.agent_socket_path()],
            "agent.log",
        )
        .await?;
        *lock(&self.attested) = true;
        Ok(())
    }

    /// Stops the agent (the socket goes away with it).
    pub fn stop_agent(&self) {
        drop(lock(&self.agent).take());
    }

    /// The Workload API's endpoint, as `SPIFFE_ENDPOINT_SOCKET` holds it.
    pub fn socket(&self) -> String {
        format!("unix://{}", self.agent_socket_path())
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// `spiffe://<trust domain>/<path>`.
    pub fn id(&self, path: &str) -> Identity {
        let id = format!(
            "spiffe://{}/{}",
            self.trust_domain,
            path.trim_start_matches('/')
        );
        match Identity::parse(&id) {
            Ok(identity) => identity,
            Err(e) => panic!("{id} is not an identity: {e}"),
        }
    }

    /// A scratch directory of this fixture's, removed with it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Registers the workload run from `executable` as `identity`, with SVIDs living `ttl`;
    /// returns the entry's id.
    pub async fn register(
        &self,
        identity: &Identity,
        executable: &Path,
        ttl: Duration,
    ) -> Result<String, SpireError> {
        let parent = format!("spiffe://{}/node", self.trust_domain);
        let selector = format!("unix:path:{}", executable.display());
        let ttl = ttl.as_secs().max(1).to_string();
        let out = self
            .server_cli(&[
                "entry",
                "create",
                "-parentID",
                &parent,
                "-spiffeID",
                identity.as_str(),
                "-selector",
                &selector,
                "-x509SVIDTTL",
                &ttl,
            ])
            .await?;
        out.lines()
            .find_map(|l| {
                l.strip_prefix("Entry ID")
                    .map(|r| r.trim_start_matches([' ', ':']))
            })
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| SpireError::Spire {
                what: format!("registering {identity}"),
                detail: out.clone(),
            })
    }

    /// Deletes a registration entry.
    pub async fn unregister(&self, entry: &str) -> Result<(), SpireError> {
        self.server_cli(&["entry", "delete", "-entryID", entry])
            .await
            .map(drop)
    }

    /// The trust bundle (the server's CA certificates), PEM.
    pub async fn bundle_pem(&self) -> Result<String, SpireError> {
        self.server_cli(&["bundle", "show"]).await
    }

    fn server_socket(&self) -> String {
        self.dir.join("server.sock").display().to_string()
    }

    fn agent_socket_path(&self) -> String {
        self.dir.join("agent.sock").display().to_string()
    }

    /// Runs `spire-server <args> -socketPath <ours>` and returns its standard output.
    async fn server_cli(&self, args: &[&str]) -> Result<String, SpireError> {
        let socket = self.server_socket();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", &socket]);
        let what = format!("spire-server {}", args.join(" "));
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(self.bins.join("spire-server"))
                .args(&all)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| SpireError::Spire {
            what: what.clone(),
            detail: "no answer in 30 s".into(),
        })?
        .map_err(io(&what))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(SpireError::Spire {
                what,
                detail: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
            });
        }
        Ok(stdout)
    }

    /// Polls `<program> healthcheck <args>` until it passes, for up to a minute.
    async fn wait_healthy(
        &self,
        program: &str,
        args: &[&str],
        log: &str,
    ) -> Result<(), SpireError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = tokio::process::Command::new(self.bins.join(program))
                .arg("healthcheck")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(io(&format!("{program} healthcheck")))?;
            if status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(SpireError::Spire {
                    what: format!("{program} did not become healthy in 60 s"),
                    detail: log_tail(&self.dir.join(log)),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn server_config(dir: &Path, port: u16, options: &SpireOptions) -> String {
    let mut config = String::new();
    let _ = write!(
        config,
        r#"server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{socket}"
    trust_domain = "{domain}"
    data_dir = "{data}"
    log_level = "INFO"
    default_x509_svid_ttl = "{ttl}s"
    ca_ttl = "24h"
    ca_key_type = "ec-p256"
}}

plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{data}/datastore.sqlite3"
        }}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
}}
"#,
        socket = dir.join("server.sock").display(),
        domain = options.trust_domain,
        data = dir.join("server-data").display(),
        ttl = options.svid_ttl.as_secs().max(1),
    );
    config
}

fn agent_config(dir: &Path, port: u16, trust_domain: &str) -> String {
    format!(
        r#"agent {{
    data_dir = "{data}"
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{socket}"
    trust_domain = "{trust_domain}"
    insecure_bootstrap = true
}}

plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "disk" {{
        plugin_data {{
            directory = "{data}"
        }}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{
            discover_workload_path = true
            # No sha256 selector: hashing a debug binary at every attestation is slow.
            workload_size_limit = -1
        }}
    }}
}}
"#,
        data = dir.join("agent-data").display(),
        socket = dir.join("agent.sock").display(),
    )
}

/// A fresh directory under the system's temporary directory. Kept short: a Unix socket's path
/// must fit in 108 bytes.
fn scratch_dir() -> Result<PathBuf, SpireError> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("spire-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io("creating the scratch directory"))?;
    Ok(dir)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> SpireError + '_ {
    move |source| SpireError::Io {
        what: what.to_owned(),
        source,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
