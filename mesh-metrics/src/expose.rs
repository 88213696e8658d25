//! The Prometheus text exposition format, version 0.0.4.
//!
//! Hand-written rather than through prometheus-client: our series are already reduced to
//! plain numbers, and writing them straight into one `String` avoids building the client
//! library's own registry on every scrape.

use std::fmt::Write;
use std::sync::{Arc, PoisonError, RwLock};

use crate::{ConstLabels, LabelEncoder, Labels};

/// The `Content-Type` of the text this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Something that writes metric families into an exposition.
pub trait Collect: Send + Sync {
    /// Writes every family this holds, each with [`Exposition::family`] followed by its
    /// samples.
    fn collect(&self, out: &mut Exposition<'_>);
}

/// A text exposition being written: the current family's name and the registry's constant
/// labels.
#[derive(Debug)]
pub struct Exposition<'a> {
    out: &'a mut String,
    name: String,
    consts: &'a ConstLabels,
}

impl Exposition<'_> {
    /// Starts a family: its `# HELP` and `# TYPE` lines. `kind` is `counter`, `gauge`,
    /// `histogram` or `summary`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.name.clear();
        self.name.push_str(name);
        let _ = writeln!(
            self.out,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// Encodes a label set for [`Exposition::sample`] (once per series, reused for each of
    /// its samples).
    pub fn labels<L: Labels>(&self, labels: &L) -> String {
        let mut s = String::new();
        labels.encode(&mut LabelEncoder::new(&mut s));
        s
    }

    /// Writes `{family}{suffix}{labels,const labels,extra} value`.
    pub fn sample(&mut self, suffix: &str, labels: &str, extra: &str, value: u64) {
        self.head(suffix, labels, extra);
        let _ = writeln!(self.out, " {value}");
    }

    /// Like [`Exposition::sample`], for a floating-point value.
    pub fn sample_f64(&mut self, suffix: &str, labels: &str, extra: &str, value: f64) {
        self.head(suffix, labels, extra);
        let _ = writeln!(self.out, " {value}");
    }

    fn head(&mut self, suffix: &str, labels: &str, extra: &str) {
        self.out.push_str(&self.name);
        self.out.push_str(suffix);
        let parts = [labels, self.consts.as_str(), extra];
        if parts.iter().any(|p| !p.is_empty()) {
            self.out.push('{');
            let mut first = true;
            for part in parts.into_iter().filter(|p| !p.is_empty()) {
                if !first {
                    self.out.push(',');
                }
                first = false;
                self.out.push_str(part);
            }
            self.out.push('}');
        }
    }
}

/// Everything a workload exposes: its collectors and its constant labels.
///
/// ```
/// use mesh_metrics::{ConstLabels, HttpLabels, HttpMetrics, Registry, TcpMetrics};
///
/// let http = HttpMetrics::<HttpLabels>::new();
/// let tcp = TcpMetrics::<()>::new();
/// let registry = Registry::new(ConstLabels::new([("namespace", "default")])?)
///     .with(http.clone())
///     .with(tcp.clone());
/// let text = registry.encode();
/// assert!(text.contains("# TYPE mesh_http_requests_total counter"));
/// # Ok::<(), mesh_metrics::InvalidLabelName>(())
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    consts: ConstLabels,
    collectors: Arc<RwLock<Vec<Arc<dyn Collect>>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("consts", &self.consts)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry adding `consts` to every line.
    pub fn new(consts: ConstLabels) -> Self {
        Self {
            consts,
            collectors: Arc::default(),
        }
    }

    /// Adds a collector.
    pub fn register(&self, collector: impl Collect + 'static) {
        self.collectors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(collector));
    }

    /// Adds a collector, builder style.
    pub fn with(self, collector: impl Collect + 'static) -> Self {
        self.register(collector);
        self
    }

    /// Writes the whole exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the whole exposition to `out`.
    pub fn encode_into(&self, out: &mut String) {
        let collectors = self
            .collectors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut exposition = Exposition {
            out,
            name: String::new(),
            consts: &self.consts,
        };
        for c in collectors {
            c.collect(&mut exposition);
        }
    }
}
