//! mesh-viz's dashboard in a real headless Chromium (Debian's `chromium`): the rendered page
//! shows every deployment of the test topology, the edge between them, a live tap line for a
//! request sent during the test, and a proxy that does not answer marked as such; the test
//! leaves a screenshot (`MESH_SCREENSHOT` names where to copy it, as the README's was made).

mod support;

use std::time::Duration;

use mesh_core::test_util::{HttpVersion, TestClient};
use mesh_viz::Target;
use mesh_viz::dashboard::{DashboardConfig, serve};
use support::get;
use support::viz::Topology;

/// Runs Chromium headless on `url` with `args`, bounded in time; returns stdout.
async fn chromium(profile: &std::path::Path, url: &str, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            // Virtual time runs the page's timers and its event stream (which ends after the
            // dashboard's `tap_stream`) before the DOM is read.
            .arg("--virtual-time-budget=6000")
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finished in time")
    .expect("chromium runs (Debian's `chromium` package)");
    assert!(
        output.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_topology_the_stats_and_live_requests_in_chromium() {
    let topology = Topology::start("viz-dashboard").await;
    let closed = mesh_core::test_util::closed_port()
        .await
        .expect("port")
        .to_string();
    let mut targets = topology.targets();
    targets.push(Target(closed.clone()));
    let mut config = DashboardConfig::new(targets);
    config.refresh = Duration::from_millis(500);
    config.tap_stream = Duration::from_secs(2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let server = tokio::spawn(serve(listener, config));

    // Traffic all along, so that the live view has lines to show whenever the page connects.
    let outbound = topology.web.outbound.expect("outbound");
    let traffic = tokio::spawn(async move {
        let mut conn = TestClient::connect(outbound, HttpVersion::Http1)
            .await
            .expect("connect");
        loop {
            assert_eq!(get(&mut conn, "api", "/dashboard-probe").await.0, 200);
            let _ = get(&mut conn, "api", "/missing").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // The server has read the proxies twice (rates need two readings) with traffic between.
    let state_url = format!("{url}api/state");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, body, _) = support::run("curl", &["-sS", "--max-time", "5", &state_url]).await;
            if let Ok(state) = serde_json::from_str::<serde_json::Value>(&body) {
                let edges = state["edges"].as_array().map_or(0, Vec::len);
                if state["readings"].as_u64() >= Some(3) && edges > 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the dashboard reads the proxies");

    let profile = topology.mesh.dir.join("chromium");
    let dom = chromium(&profile, &url, &["--dump-dom"]).await;
    for deployment in ["test/api", "test/web"] {
        assert!(
            dom.contains(&format!("class=\"stat-row\" data-name=\"{deployment}\""))
                || dom.contains(&format!("data-name=\"{deployment}\" class=\"stat-row\"")),
            "{deployment} in the stat table: {dom}"
        );
        assert!(
            dom.contains(&format!("data-name=\"{deployment}\"><circle")),
            "{deployment} in the graph: {dom}"
        );
    }
    assert!(
        dom.contains("data-edge=\"test/web-&gt;test/api\"")
            || dom.contains("data-edge=\"test/web->test/api\""),
        "the edge: {dom}"
    );
    assert!(
        dom.contains("class=\"edge mtls\""),
        "the edge is marked mTLS: {dom}"
    );
    let tap_lines: Vec<&str> = dom
        .split("<tr class=\"tap-line\">")
        .skip(1)
        .filter(|row| {
            row.split("</tr>")
                .next()
                .is_some_and(|r| r.contains("/dashboard-probe"))
        })
        .collect();
    assert!(!tap_lines.is_empty(), "a live tap line: {dom}");
    assert!(
        dom.contains(&format!("data-target=\"{closed}\""))
            && dom.contains("not answering: unreachable"),
        "the dead proxy is marked: {dom}"
    );

    let shot = topology.mesh.dir.join("dashboard.png");
    chromium(
        &profile,
        &url,
        &[
            "--window-size=1400,1000",
            &format!("--screenshot={}", shot.display()),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("MESH_SCREENSHOT") {
        std::fs::write(&keep, &png).expect("copy the screenshot");
    }
    traffic.abort();
    server.abort();
}
