//! Where the proxy's identity comes from: files in a directory (reloaded when they change), the
//! SPIFFE Workload API (a SPIRE agent), or the control plane's identity API; and what each
//! says about readiness while the proxy waits for its first credentials and afterwards.

use std::time::Duration;

use mesh_metrics::{Collect, Exposition};
use mesh_tls::control::CertifierReport;
use mesh_tls::spiffe::{SpiffeConfig, SpiffeIdentity, SpiffeReport};
use mesh_tls::{CredentialFiles, CredentialStore};
use serde_json::json;
use tokio::task::JoinHandle;

use super::control::{self, ControlLink};
use super::{Config, StartError};

/// The credentials in force, the task keeping them current (unless it was started with the
/// source), and the control plane's channel in Kubernetes mode.
pub(crate) struct Loaded {
    pub(crate) store: CredentialStore,
    pub(crate) task: Option<JoinHandle<()>>,
    pub(crate) link: Option<ControlLink>,
}

/// How the source is doing, for `/ready`, `/endpoints` and `/metrics`. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) enum Status {
    /// Files: loaded at start or not at all.
    Files,
    /// The control plane's identity API.
    Control(CertifierReport),
    /// The SPIFFE Workload API.
    Spiffe(SpiffeReport),
}

impl Status {
    /// Why handshakes have no identity now, if they have none.
    pub(crate) fn not_ready(&self) -> Option<String> {
        match self {
            Self::Files => None,
            Self::Control(report) if report.certified() == 0 => Some(match report.last_error() {
                Some(error) => format!("waiting for a certificate from the control plane: {error}"),
                None => "waiting for a certificate from the control plane".into(),
            }),
            Self::Control(_) => None,
            Self::Spiffe(report) => report.ready().err(),
        }
    }

    /// The source's facts, as `/endpoints` shows them.
    pub(crate) fn json(&self) -> serde_json::Value {
        let unix = |t: Option<std::time::SystemTime>| {
            t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        };
        match self {
            Self::Files => json!({ "source": "files" }),
            Self::Control(report) => json!({
                "source": "control",
                "certified": report.certified(),
                "failures": report.failures(),
                "last_error": report.last_error(),
                "valid_until_unix": unix(report.valid_until()),
            }),
            Self::Spiffe(report) => json!({
                "source": "spiffe",
                "state": format!("{:?}", report.state()).to_lowercase(),
                "identity": report.identity().map(|i| i.to_string()),
                "serial": report.serial(),
                "valid_until_unix": unix(report.valid_until()),
                "applied": report.applied(),
                "losses": report.losses(),
                "errors": report.errors(),
                "refused": report.refused(),
                "last_error": report.last_error(),
            }),
        }
    }
}

/// The identity source the configuration names, started but not yet waited for.
pub(crate) enum Source {
    Files(CredentialFiles, Duration),
    // Boxed: the certifier and its channel are large, and a source lives only until loaded.
    Control(Box<control::Pending>),
    Spiffe(SpiffeIdentity),
}

impl Source {
    /// Starts the source (the SPIFFE follower connects in the background, its task added to
    /// `tasks`) and says how it is doing. `Config::check` has made sure exactly one source is
    /// configured.
    pub(crate) fn start(
        config: &Config,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Result<(Self, Status), StartError> {
        let identity = &config.identity;
        if let Some(dir) = &identity.dir {
            let files = CredentialFiles::in_dir(dir);
            return Ok((
                Self::Files(files, identity.reload_interval.0),
                Status::Files,
            ));
        }
        if let Some(socket) = &identity.spiffe_socket {
            let endpoint = (socket != "env").then(|| socket.clone());
            let expected = identity.name.as_ref().map(|name| name.0.clone());
            let (task, spiffe) = mesh_tls::spiffe::follow(SpiffeConfig::new(endpoint, expected))
                .map_err(|e| StartError::Identity(e.to_string()))?;
            tasks.push(task);
            let status = Status::Spiffe(spiffe.report());
            return Ok((Self::Spiffe(spiffe), status));
        }
        match (&config.control, &identity.name) {
            (Some(plane), Some(name)) => {
                let pending = control::Pending::new(plane, &name.0)?;
                let status = Status::Control(pending.report());
                Ok((Self::Control(Box::new(pending)), status))
            }
            _ => Err(StartError::Identity(
                "no identity: give `identity.dir`, `identity.spiffe_socket`, or `[control]` and `identity.name`"
                    .into(),
            )),
        }
    }

    /// The first credentials: read now (files), or waited for as long as it takes (nothing is
    /// served without an identity).
    pub(crate) async fn load(self) -> Result<Loaded, StartError> {
        match self {
            Self::Files(files, interval) => {
                let store = CredentialStore::from_files(&files)?;
                let task = store.watch(files, interval);
                Ok(Loaded {
                    store,
                    task: Some(task),
                    link: None,
                })
            }
            Self::Control(pending) => {
                let (store, task, link) = pending.connect().await?;
                Ok(Loaded {
                    store,
                    task: Some(task),
                    link: Some(link),
                })
            }
            Self::Spiffe(spiffe) => {
                tracing::info!("waiting for an SVID from the SPIFFE Workload API");
                let store = spiffe.credentials().await;
                Ok(Loaded {
                    store,
                    task: None,
                    link: None,
                })
            }
        }
    }
}

/// The Workload API's counters in `/metrics`.
#[derive(Clone, Debug)]
pub(crate) struct SpiffeMetrics(pub(crate) SpiffeReport);

impl Collect for SpiffeMetrics {
    fn collect(&self, out: &mut Exposition<'_>) {
        let report = &self.0;
        let counters = [
            (
                "mesh_identity_svids_applied_total",
                "SVIDs (or trust bundles) from the SPIFFE Workload API put in force.",
                report.applied(),
            ),
            (
                "mesh_identity_workload_api_losses_total",
                "Times the stream from the SPIFFE Workload API broke or ended.",
                report.losses(),
            ),
            (
                "mesh_identity_workload_api_errors_total",
                "Failed attempts to get a usable SVID from the SPIFFE Workload API.",
                report.errors(),
            ),
            (
                "mesh_identity_svids_refused_total",
                "SVIDs refused because they name another identity than the configured one.",
                report.refused(),
            ),
        ];
        for (name, help, value) in counters {
            out.family(name, "counter", help);
            out.sample("", "", "", value);
        }
        out.family(
            "mesh_identity_ready",
            "gauge",
            "1 when an SVID is in force, 0 while waiting for one or after it was withdrawn.",
        );
        out.sample("", "", "", u64::from(report.ready().is_ok()));
        if let Some(until) = report
            .valid_until()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        {
            out.family(
                "mesh_identity_svid_expiry_timestamp_seconds",
                "gauge",
                "When the SVID in force expires, in seconds since the epoch.",
            );
            out.sample("", "", "", until.as_secs());
        }
    }
}
