//! Endpoints listed in a file, re-read when it changes.
//!
//! One endpoint per line: `address:port`, then optional `key=value` words: `weight=N`,
//! `identity=<SPIFFE ID or DNS name>`, and any other key as a label. `#` starts a comment.
//!
//! ```text
//! # the web tier
//! 10.0.0.1:8080 zone=a
//! 10.0.0.2:8080 zone=b weight=3 identity=spiffe://mesh.local/ns/web/sa/web
//! [fd00::3]:8080 canary=true weight=1
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mesh_core::{Endpoint, Identity};

use super::updates::{Updates, apply, channel};

/// A line that could not be read; it is skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// Its number, from 1.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Reads an endpoint list: the endpoints of the good lines, and an error for each bad one.
pub fn parse(text: &str) -> (Vec<Endpoint>, Vec<LineError>) {
    let mut endpoints = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(reason) => errors.push(LineError {
                line: i + 1,
                reason,
            }),
        }
    }
    (endpoints, errors)
}

fn parse_line(line: &str) -> Result<Endpoint, String> {
    let mut words = line.split_whitespace();
    let addr_text = words.next().unwrap_or("");
    let addr: SocketAddr = addr_text.parse().map_err(|_| {
        format!("{addr_text:?} is not an IP address with a port (use DNS discovery for names)")
    })?;
    let mut endpoint = Endpoint::new(addr);
    let mut labels = Vec::new();
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not key=value"))?;
        match key {
            "weight" => {
                endpoint.weight = value
                    .parse()
                    .map_err(|_| format!("weight {value:?} is not a whole number"))?;
            }
            "identity" => {
                endpoint.identity =
                    Some(Identity::parse(value).map_err(|e| format!("identity: {e}"))?);
            }
            "" => return Err(format!("{word:?} has an empty key")),
            _ => labels.push((key.to_owned(), value.to_owned())),
        }
    }
    Ok(endpoint.with_labels(labels))
}

/// What the last read of a watched file found wrong, for an admin page or a test.
#[derive(Clone, Debug, Default)]
pub struct FileReport {
    inner: Arc<Mutex<ReportInner>>,
}

#[derive(Debug, Default)]
struct ReportInner {
    errors: Vec<LineError>,
    read_error: Option<String>,
    reads: u64,
}

impl FileReport {
    /// The bad lines of the last version read.
    pub fn line_errors(&self) -> Vec<LineError> {
        self.lock().errors.clone()
    }

    /// Why the file could not be read the last time, if it could not.
    pub fn read_error(&self) -> Option<String> {
        self.lock().read_error.clone()
    }

    /// How many distinct versions of the file were applied.
    pub fn versions(&self) -> u64 {
        self.lock().reads
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReportInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Watches `path`, checking every `interval` whether its contents changed, and reports the
/// differences as changes. Bad lines are reported (a warning, and [`FileReport`]) with their
/// numbers and skipped; while any line is bad, endpoints missing from the file are *not*
/// removed, since one of them may be the endpoint a broken line meant; the good set stays in
/// force until the file reads clean. An unreadable file changes nothing.
///
/// Must be called within a tokio runtime; the watching task ends with the stream.
pub fn watch(path: impl Into<PathBuf>, interval: Duration) -> (Updates, FileReport) {
    let path = path.into();
    let report = FileReport::default();
    let (sender, updates) = channel();
    let task_report = report.clone();
    let task = tokio::spawn(async move {
        let mut current: HashMap<SocketAddr, Endpoint> = HashMap::new();
        let mut last: Option<String> = None;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(err) => {
                    let message = format!("cannot read {}: {err}", path.display());
                    if task_report.read_error().as_ref() != Some(&message) {
                        tracing::warn!(%message, "keeping the current endpoints");
                    }
                    task_report.lock().read_error = Some(message);
                    continue;
                }
            };
            if last.as_ref() == Some(&text) {
                continue;
            }
            let (endpoints, errors) = parse(&text);
            for error in &errors {
                tracing::warn!(file = %path.display(), %error, "skipping a bad endpoint line");
            }
            let keep_missing = !errors.is_empty();
            {
                let mut report = task_report.lock();
                report.errors = errors;
                report.read_error = None;
                report.reads += 1;
            }
            last = Some(text);
            if !apply(&mut current, endpoints, keep_missing, &sender) {
                return;
            }
        }
    });
    (updates.with_task(task), report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_their_options_and_errors_name_the_line() {
        let text = "\
# comment
10.0.0.1:80 zone=a
10.0.0.2:80 weight=3 identity=spiffe://mesh.local/ns/a/sa/b   # trailing comment

[::1]:81
web.local:80
10.0.0.3:80 weight=heavy
10.0.0.4:80 lonely
";
        let (endpoints, errors) = parse(text);
        assert_eq!(endpoints.len(), 3);
        assert_eq!(endpoints[0].label("zone"), Some("a"));
        assert_eq!(endpoints[1].weight, 3);
        assert_eq!(
            endpoints[1].identity.as_ref().map(|i| i.as_str()),
            Some("spiffe://mesh.local/ns/a/sa/b")
        );
        assert_eq!(endpoints[2].addr, "[::1]:81".parse().expect("addr"));
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [6, 7, 8]);
        assert!(errors[0].reason.contains("web.local:80"), "{}", errors[0]);
        assert!(
            errors[1].to_string().starts_with("line 7: weight"),
            "{}",
            errors[1]
        );
    }
}
