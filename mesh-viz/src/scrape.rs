//! Scraping every proxy at once, each with its own deadline: one that does not answer, answers
//! garbage or answers late is reported as such, and never holds up or hides the others.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fetch::{self, FetchError};
use crate::model::ProxyMetrics;
use crate::text::{self, TextError};

/// A proxy to read: its admin address, as given.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Target(pub String);

impl Target {
    /// The targets in `list`: addresses separated by commas, whitespace or newlines (a file's
    /// text); `#` starts a comment to the end of the line.
    pub fn parse_list(list: &str) -> Vec<Self> {
        list.lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(|line| line.split([',', ' ', '\t']))
            .filter(|s| !s.is_empty())
            .map(|s| Self(s.to_owned()))
            .collect()
    }
}

/// Why a proxy's metrics could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The fetch failed: unreachable, late, not HTTP, not 200, too large.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// It answered, but not with the Prometheus text format.
    #[error("not the Prometheus text format: {0}")]
    Garbage(#[from] TextError),
    /// The text is not UTF-8.
    #[error("the answer is not UTF-8 text")]
    NotText,
}

impl ScrapeError {
    /// A short word for tables: `unreachable`, `timeout`, `garbage`, `error`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fetch(FetchError::Unreachable(_) | FetchError::Address(_)) => "unreachable",
            Self::Fetch(FetchError::Timeout(_)) => "timeout",
            Self::Garbage(_) | Self::NotText => "garbage",
            Self::Fetch(_) => "error",
        }
    }
}

/// One proxy's scrape.
#[derive(Debug)]
pub struct Scrape {
    /// Whom.
    pub target: Target,
    /// What it said.
    pub result: Result<ProxyMetrics, ScrapeError>,
    /// How long it took.
    pub took: Duration,
}

/// Reads one proxy's `/metrics` within `deadline`.
pub async fn scrape(target: &Target, deadline: Duration) -> Scrape {
    let start = Instant::now();
    let result = async {
        let authority = fetch::authority_of(&target.0)?;
        let body = fetch::get(&authority, "/metrics", deadline, text::MAX_TEXT).await?;
        let text = std::str::from_utf8(&body).map_err(|_| ScrapeError::NotText)?;
        Ok(ProxyMetrics::from_samples(&text::parse(text)?))
    }
    .await;
    Scrape {
        target: target.clone(),
        result,
        took: start.elapsed(),
    }
}

/// Scrapes every target in parallel, each within `deadline`; the scrapes come back in the
/// order of `targets`.
pub async fn scrape_all(targets: &[Target], deadline: Duration) -> Vec<Scrape> {
    let tasks: Vec<_> = targets
        .iter()
        .map(|t| {
            let t = t.clone();
            tokio::spawn(async move { scrape(&t, deadline).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (task, target) in tasks.into_iter().zip(targets) {
        out.push(match task.await {
            Ok(scrape) => scrape,
            Err(e) => Scrape {
                target: target.clone(),
                result: Err(FetchError::Http(format!("the scrape task failed: {e}")).into()),
                took: deadline,
            },
        });
    }
    out
}

impl Scrape {
    /// The target and what it said, its error as text (`timeout: no answer within 1s`), the
    /// form a [`Reading`](crate::Reading) is made of.
    pub fn outcome(&self) -> (Target, Result<ProxyMetrics, String>) {
        let result = match &self.result {
            Ok(m) => Ok(m.clone()),
            Err(e) => Err(format!("{}: {e}", e.kind())),
        };
        (self.target.clone(), result)
    }
}

/// The outcomes of `scrapes`, for a [`Reading`](crate::Reading).
pub fn outcomes(scrapes: &[Scrape]) -> Vec<(Target, Result<ProxyMetrics, String>)> {
    scrapes.iter().map(Scrape::outcome).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_lists_are_read_like_files() {
        let list = "127.0.0.1:1, 127.0.0.1:2\n# a comment\n127.0.0.1:3 # web\n\n";
        let targets = Target::parse_list(list);
        assert_eq!(
            targets,
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"].map(|s| Target(s.into()))
        );
    }
}
