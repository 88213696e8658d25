//! The demo as a user runs it: it meshes its four apps, prints mesh-viz's golden-metrics tables
//! (per deployment, per pod, per edge) in which retries keep A's success rate above b-1's,
//! shows A's balancer steering around b-1, says where its dashboard is, prints live requests
//! with `--tap`, and exits 0 on Ctrl-C and after `--duration`.

mod support;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn the_demo_prints_its_tables_and_exits_cleanly_on_ctrl_c() {
    let mut child = tokio::process::Command::new(support::example_binary("demo"))
        .args(["--interval", "1s", "--tap", "--rps", "40"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("demo starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut output = String::new();
    let mut tables = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read") {
            output.push_str(&line);
            output.push('\n');
            if line.starts_with("A's balancer for b") {
                tables += 1;
                if tables == 3 {
                    break;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("three tables in time; got:\n{output}"));

    // Rows by deployment and by pod, each with its proxies answering.
    for (name, proxies) in [
        ("demo/b", "2/2"),
        ("demo/c", "1/1"),
        ("demo/b-0", "1/1"),
        ("demo/b-1", "1/1"),
        ("demo/c-0", "1/1"),
    ] {
        assert!(
            output.lines().any(|l| {
                let columns: Vec<&str> = l.split_whitespace().collect();
                columns.first() == Some(&name) && columns.get(1) == Some(&proxies)
            }),
            "{name} {proxies} missing from:\n{output}"
        );
    }
    for expected in [
        "NAME ",
        "SRC ",
        "tap outbound",
        "Dashboard: open http://127.0.0.1:",
        "--proxies-file",
    ] {
        assert!(
            output.contains(expected),
            "{expected:?} missing from:\n{output}"
        );
    }
    // Every edge of the demo, over mTLS; A's view of b succeeding (retries cover b-1's
    // failures).
    for (src, dst) in [("a", "b"), ("a", "c"), ("b", "c"), ("c", "b")] {
        let edge = output
            .lines()
            .rev()
            .find(|l| {
                l.split_whitespace()
                    .take(2)
                    .eq([format!("demo/{src}"), format!("demo/{dst}")]
                        .iter()
                        .map(String::as_str))
            })
            .unwrap_or_else(|| panic!("edge {src} -> {dst} in:\n{output}"));
        let columns: Vec<&str> = edge.split_whitespace().collect();
        assert_eq!(columns[4], "yes", "mTLS: {edge}");
        if (src, dst) == ("a", "b") {
            let success: f64 = columns[6]
                .trim_end_matches('%')
                .parse()
                .expect("success rate");
            assert!(success >= 99.0, "{edge}");
        }
    }

    let pid = child.id().expect("pid").to_string();
    let (code, _, _) = support::run("kill", &["-INT", &pid]).await;
    assert_eq!(code, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits in time")
        .expect("status");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_demo_stops_by_itself_after_its_duration() {
    let (code, stdout, stderr) = support::run(
        support::example_binary("demo").to_str().expect("path"),
        &["--duration", "2s", "--interval", "1s"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("SRC ")), "{stdout}");
    assert!(stdout.contains("stopping"), "{stdout}");
}
