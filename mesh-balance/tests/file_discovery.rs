//! File discovery: the file is edited during a run; a malformed line is reported and skipped.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use mesh_balance::discover::{EndpointChange, Updates, file};
use tower::discover::Change;

fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "mesh-balance-{name}-{}-{nanos}",
        std::process::id()
    ))
}

async fn next(updates: &mut Updates) -> EndpointChange {
    let change = tokio::time::timeout(
        Duration::from_secs(5),
        std::future::poll_fn(|cx| Pin::new(&mut *updates).poll_next(cx)),
    )
    .await
    .expect("a change in time")
    .expect("stream open");
    change.unwrap_or_else(|never| match never {})
}

fn describe(change: &EndpointChange) -> String {
    match change {
        Change::Insert(addr, e) => format!("+{addr} w{}", e.weight),
        Change::Remove(addr) => format!("-{addr}"),
    }
}

/// Writes the whole file at once (aside, then renamed), as an editor or a config manager does.
fn write(path: &PathBuf, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

#[tokio::test]
async fn edits_apply_live_and_bad_lines_are_reported_and_skipped() {
    let path = scratch("endpoints");
    write(&path, "127.0.0.1:8001\n127.0.0.1:8002 weight=2\n");
    let (mut updates, report) = file::watch(&path, Duration::from_millis(20));
    let mut first = vec![
        describe(&next(&mut updates).await),
        describe(&next(&mut updates).await),
    ];
    first.sort();
    assert_eq!(first, ["+127.0.0.1:8001 w1", "+127.0.0.1:8002 w2"]);

    // An edit: one removed, one reweighted, one added.
    write(&path, "127.0.0.1:8002 weight=5\n127.0.0.1:8003\n");
    let mut second = Vec::new();
    for _ in 0..3 {
        second.push(describe(&next(&mut updates).await));
    }
    second.sort();
    assert_eq!(
        second,
        [
            "+127.0.0.1:8002 w5",
            "+127.0.0.1:8003 w1",
            "-127.0.0.1:8001"
        ]
    );
    assert!(report.line_errors().is_empty());

    // A broken edit: line 2 is malformed. It is reported by number and skipped; the good new
    // line applies; nothing is removed while the file has errors (8002's line may be the one
    // that broke).
    write(
        &path,
        "127.0.0.1:8003\n127.0.0.1:80x2 weight=5\n127.0.0.1:8004\n",
    );
    assert_eq!(describe(&next(&mut updates).await), "+127.0.0.1:8004 w1");
    let errors = report.line_errors();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 2);
    assert!(errors[0].reason.contains("80x2"), "{}", errors[0]);

    // Fixed: the missing endpoint is removed now.
    write(&path, "127.0.0.1:8003\n127.0.0.1:8004\n");
    assert_eq!(describe(&next(&mut updates).await), "-127.0.0.1:8002");
    assert!(report.line_errors().is_empty());

    // The file disappears: reported, and nothing changes.
    std::fs::remove_file(&path).expect("remove");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        report
            .read_error()
            .is_some_and(|e| e.contains("cannot read"))
    );
    let quiet = tokio::time::timeout(
        Duration::from_millis(100),
        std::future::poll_fn(|cx| Pin::new(&mut updates).poll_next(cx)),
    )
    .await;
    assert!(quiet.is_err(), "no change while the file is missing");
    assert_eq!(report.versions(), 4);
}

#[tokio::test]
async fn a_file_replaced_by_garbage_keeps_the_endpoints_until_it_is_fixed() {
    let path = scratch("garbage");
    write(&path, "127.0.0.1:8101\n");
    let (mut updates, report) = file::watch(&path, Duration::from_millis(20));
    assert_eq!(describe(&next(&mut updates).await), "+127.0.0.1:8101 w1");

    // Binary garbage: not even text. Reported; the endpoint stays.
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x13, 0x37]).expect("garbage");
    assert!(quiet(&mut updates).await, "a change from binary garbage");
    assert!(report.read_error().is_some(), "binary garbage is reported");
    // Text garbage: every line bad. Each reported by number; nothing is removed.
    write(&path, "hello\nthis is :not an endpoint\n");
    assert!(quiet(&mut updates).await, "a change from text garbage");
    let lines: Vec<usize> = report.line_errors().iter().map(|e| e.line).collect();
    assert_eq!(lines, [1, 2]);
    assert!(report.read_error().is_none());
    // Fixed, with another endpoint: the new state applies in full.
    write(&path, "127.0.0.1:8102\n");
    let mut fixed = vec![
        describe(&next(&mut updates).await),
        describe(&next(&mut updates).await),
    ];
    fixed.sort();
    assert_eq!(fixed, ["+127.0.0.1:8102 w1", "-127.0.0.1:8101"]);
    assert!(report.line_errors().is_empty());
}

/// Whether no change comes for 150 ms.
async fn quiet(updates: &mut Updates) -> bool {
    let poll = std::future::poll_fn(|cx| Pin::new(&mut *updates).poll_next(cx));
    tokio::time::timeout(Duration::from_millis(150), poll)
        .await
        .is_err()
}
