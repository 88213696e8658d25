//! A real Kubernetes API server for tests: etcd and kube-apiserver, built from pinned Go
//! modules by `tests/k8s/build.sh` into a cache outside the clone, started on 127.0.0.1 with
//! free ports, a generated serving certificate, service-account signing keys (TokenRequest and
//! TokenReview work), RBAC, and an admin client certificate.
//!
//! One fixture per test binary ([`KubeFixture::shared`]); tests keep out of each other's way
//! with their own namespaces ([`KubeFixture::namespace`]). The processes are tied to the test
//! process by a pipe: when it exits, however it exits, they are killed and their files removed.

mod control;
mod netns;
mod tokens;

pub use self::control::{Control, TRUST_DOMAIN, ensure_crd};
pub use self::netns::{TestNetns, pod_ip, run};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::sync::OnceCell;

use mesh_core::test_util::{Supervised, free_port};

/// The Kubernetes release the fixture runs; `tests/k8s/go.mod` pins the same.
pub const KUBERNETES_VERSION: &str = "1.37.2";

/// The audience the API server puts in service-account tokens by default (its issuer).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// What can stop the fixture from starting.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The binaries are not built.
    #[error(
        "{0} is missing: run tests/k8s/build.sh (or .ci/run), or set MESH_K8S_BIN to a directory with etcd and kube-apiserver"
    )]
    Missing(PathBuf),
    /// Writing the fixture's files or starting a process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Minting a certificate or key failed.
    #[error("generating keys: {0}")]
    Keys(#[from] rcgen::Error),
    /// The API server did not become ready in time.
    #[error("kube-apiserver not ready after {waited:?}: {last}; its log is {log}")]
    NotReady {
        /// How long the fixture waited.
        waited: Duration,
        /// The last answer or error from `/readyz`.
        last: String,
        /// The API server's log file.
        log: PathBuf,
    },
    /// kube-rs refused the generated kubeconfig.
    #[error("kube client: {0}")]
    Kube(String),
}

/// A running etcd and kube-apiserver.
#[derive(Debug)]
pub struct KubeFixture {
    dir: PathBuf,
    url: String,
    kubeconfig: PathBuf,
    ca_pem: String,
    service_account_key: PathBuf,
    _etcd: Supervised,
    apiserver: std::sync::Mutex<Option<Supervised>>,
    apiserver_bin: PathBuf,
    apiserver_args: Vec<String>,
}

static SHARED: OnceCell<KubeFixture> = OnceCell::const_new();
static NAMESPACES: AtomicU32 = AtomicU32::new(0);

impl KubeFixture {
    /// The fixture of this test binary, started by the first test that asks. Panics (it is a
    /// test fixture) with the reason when the API server cannot be started.
    pub async fn shared() -> &'static KubeFixture {
        match SHARED.get_or_try_init(Self::start).await {
            Ok(fixture) => fixture,
            Err(error) => panic!("the Kubernetes fixture did not start: {error}"),
        }
    }

    /// Where the binaries are: `$MESH_K8S_BIN`, or `$HOME/.cache/mesh/k8s-<version>`.
    pub fn bin_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("MESH_K8S_BIN") {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
        Path::new(&home)
            .join(".cache/mesh")
            .join(format!("k8s-{KUBERNETES_VERSION}"))
    }

    /// Starts etcd and kube-apiserver and waits until `/readyz` answers `ok`.
    pub async fn start() -> Result<Self, FixtureError> {
        let bin = Self::bin_dir();
        let etcd_bin = bin.join("etcd");
        let apiserver_bin = bin.join("kube-apiserver");
        for path in [&etcd_bin, &apiserver_bin] {
            if !path.exists() {
                return Err(FixtureError::Missing(path.clone()));
            }
        }
        let dir = std::env::temp_dir().join(format!(
            "mesh-k8s-{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |what: String| move |source| FixtureError::Io { what, source };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let files = Files::write(&dir)?;

        let client_port = free_port().map_err(io("finding a free port".into()))?;
        let peer_port = free_port().map_err(io("finding a free port".into()))?;
        let secure_port = free_port().map_err(io("finding a free port".into()))?;
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Supervised::spawn(
            &etcd_bin,
            &[
                "--name=fixture".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=fixture={peer_url}"),
                // A test's data need not survive a power cut; fsync is most of etcd's latency.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &dir.join("etcd.log"),
            Some(&dir),
        )
        .map_err(io("starting etcd".into()))?;

        let path = |p: &Path| p.display().to_string();
        let apiserver_args: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={secure_port}"),
            format!("--tls-cert-file={}", path(&files.serving_cert)),
            format!("--tls-private-key-file={}", path(&files.serving_key)),
            format!("--client-ca-file={}", path(&files.ca_cert)),
            format!("--service-account-key-file={}", path(&files.sa_public)),
            format!("--service-account-signing-key-file={}", path(&files.sa_key)),
            format!("--service-account-issuer={API_AUDIENCE}"),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            // There is no kubelet or node: nothing reconciles the `kubernetes` Service.
            "--endpoint-reconciler-type=none".into(),
            "--enable-priority-and-fairness=false".into(),
            "--v=1".into(),
        ];
        // Only etcd's wrapper removes the directory: the API server may be restarted.
        let apiserver = Supervised::spawn(
            &apiserver_bin,
            &apiserver_args,
            &dir.join("kube-apiserver.log"),
            None,
        )
        .map_err(io("starting kube-apiserver".into()))?;

        let url = format!("https://127.0.0.1:{secure_port}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, files.kubeconfig(&url))
            .map_err(io(format!("writing {}", kubeconfig.display())))?;
        let fixture = Self {
            url,
            kubeconfig,
            ca_pem: files.ca_pem.clone(),
            service_account_key: files.sa_key.clone(),
            dir,
            _etcd: etcd,
            apiserver: std::sync::Mutex::new(Some(apiserver)),
            apiserver_bin,
            apiserver_args,
        };
        fixture.wait_ready(Duration::from_secs(90)).await?;
        Ok(fixture)
    }

    /// Kills the API server (etcd keeps the data) and starts it again on the same port,
    /// waiting until it is ready: every watch breaks, as when a control plane node restarts.
    /// For a fixture of a test's own ([`KubeFixture::start`]): others sharing one would fail.
    pub async fn restart_apiserver(&self, down_for: Duration) -> Result<(), FixtureError> {
        let old = self
            .apiserver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(old);
        tokio::time::sleep(down_for).await;
        let log = self.dir.join("kube-apiserver.log");
        let restarted = Supervised::spawn(&self.apiserver_bin, &self.apiserver_args, &log, None)
            .map_err(|source| FixtureError::Io {
                what: "restarting kube-apiserver".into(),
                source,
            })?;
        *self.apiserver.lock().unwrap_or_else(|p| p.into_inner()) = Some(restarted);
        self.wait_ready(Duration::from_secs(90)).await
    }

    async fn wait_ready(&self, limit: Duration) -> Result<(), FixtureError> {
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < limit {
            match self.client().await {
                Ok(client) => {
                    let request = http::Request::get("/readyz").body(Vec::new());
                    match request {
                        Ok(request) => match client.request_text(request).await {
                            Ok(text) if text.trim() == "ok" => return Ok(()),
                            Ok(text) => last = text,
                            Err(error) => last = error.to_string(),
                        },
                        Err(error) => last = error.to_string(),
                    }
                }
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(FixtureError::NotReady {
            waited: limit,
            last,
            log: self.dir.join("kube-apiserver.log"),
        })
    }

    /// A new admin (system:masters) client. Make one per test: a client's connections belong
    /// to the runtime that made it.
    pub async fn client(&self) -> Result<kube::Client, FixtureError> {
        kube::Client::try_from(self.config().await?).map_err(|e| FixtureError::Kube(e.to_string()))
    }

    /// A client acting as `user` (impersonated by the admin), with exactly that user's
    /// permissions: `system:serviceaccount:<ns>:<name>` runs with what RBAC gives the account.
    pub async fn client_as(&self, user: &str) -> Result<kube::Client, FixtureError> {
        let mut config = self.config().await?;
        config.auth_info.impersonate = Some(user.to_owned());
        kube::Client::try_from(config).map_err(|e| FixtureError::Kube(e.to_string()))
    }

    /// The admin kubeconfig, as kube-rs reads it.
    async fn config(&self) -> Result<kube::Config, FixtureError> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| FixtureError::Kube(e.to_string()))?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| FixtureError::Kube(e.to_string()))
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An admin kubeconfig file, for programs under test.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the API server's serving certificate and the admin certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The service-account signing key (tests mint tokens the API server did not issue with a
    /// key it does not know; this one is for nothing but reference).
    pub fn service_account_key(&self) -> &Path {
        &self.service_account_key
    }

    /// A directory for a test's own files, removed with the fixture.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.dir.join("scratch").join(name);
        let _ = std::fs::create_dir_all(&dir);
        dir
    }

    /// Creates a namespace with a unique name starting with `prefix`, and in it the
    /// service accounts `accounts` (with no controller manager, nobody else makes them).
    pub async fn namespace(&self, prefix: &str, accounts: &[&str]) -> String {
        let name = format!("{prefix}-{}", NAMESPACES.fetch_add(1, Ordering::Relaxed));
        let client = match self.client().await {
            Ok(client) => client,
            Err(error) => panic!("kube client: {error}"),
        };
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        if let Err(error) = namespaces.create(&PostParams::default(), &namespace).await {
            panic!("creating namespace {name}: {error}");
        }
        let service_accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        for account in std::iter::once(&"default").chain(accounts) {
            let account = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some((*account).to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            };
            if let Err(error) = service_accounts
                .create(&PostParams::default(), &account)
                .await
            {
                panic!("creating a service account in {name}: {error}");
            }
        }
        name
    }
}

/// The fixture's keys and certificates, written to its directory.
struct Files {
    ca_pem: String,
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_public: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
}

impl Files {
    fn write(dir: &Path) -> Result<Self, FixtureError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mesh test kubernetes CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::default();
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa_key = KeyPair::generate()?;

        let files = Self {
            ca_cert: dir.join("ca.pem"),
            serving_cert: dir.join("serving.pem"),
            serving_key: dir.join("serving-key.pem"),
            sa_key: dir.join("sa-key.pem"),
            sa_public: dir.join("sa.pub"),
            admin_cert: dir.join("admin.pem"),
            admin_key: dir.join("admin-key.pem"),
            ca_pem,
        };
        for (path, contents) in [
            (&files.ca_cert, files.ca_pem.clone()),
            (&files.serving_cert, serving_cert.pem()),
            (&files.serving_key, serving_key.serialize_pem()),
            (&files.sa_key, sa_key.serialize_pem()),
            (&files.sa_public, sa_key.public_key_pem()),
            (&files.admin_cert, admin_cert.pem()),
            (&files.admin_key, admin_key.serialize_pem()),
        ] {
            std::fs::write(path, contents).map_err(|source| FixtureError::Io {
                what: format!("writing {}", path.display()),
                source,
            })?;
        }
        Ok(files)
    }

    /// A kubeconfig naming the files (kube-rs and kubectl both read paths).
    fn kubeconfig(&self, url: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: fixture\n  context:\n    cluster: fixture\n    user: admin\ncurrent-context: fixture\n",
            self.ca_cert.display(),
            self.admin_cert.display(),
            self.admin_key.display(),
        )
    }
}
