//! The text exposition passes `promtool check metrics` (Debian's `prometheus` package; `.ci/run`
//! installs it) and parses back to the values recorded.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use mesh_core::grpc::GrpcCode;
use mesh_core::{Class, FailureReason, Identity};
use mesh_metrics::{ConstLabels, Direction, HttpLabels, HttpMetrics, Registry, TcpMetrics};

/// A registry with HTTP series of every kind, an overflowed label set and TCP counters.
fn populated() -> Registry {
    let http = HttpMetrics::with_options("mesh_http", 3);
    let peer = Identity::parse("spiffe://mesh.local/ns/a/sa/b").ok();
    let web = HttpLabels {
        authority: "web.default:8080".parse().ok(),
        peer,
        ..HttpLabels::new(Direction::Inbound).with_route("GET /users/{id}")
    };
    let ms = Duration::from_millis;
    let s = http.series(&web);
    for i in 0..100 {
        s.record(Some(StatusCode::OK), ms(i), Class::Success, ms(2 * i));
    }
    s.record(
        Some(StatusCode::OK),
        ms(5),
        Class::Failure(FailureReason::Grpc(GrpcCode::UNAVAILABLE)),
        ms(9),
    );
    s.record(None, ms(0), Class::Failure(FailureReason::Cancelled), ms(3));
    // A route name with characters that must be escaped.
    let odd = HttpLabels::new(Direction::Outbound).with_route("say \"hi\"\\\nbye");
    http.series(&odd).record(
        Some(StatusCode::BAD_GATEWAY),
        ms(70_000),
        Class::Failure(FailureReason::Status(StatusCode::BAD_GATEWAY)),
        ms(70_000),
    );
    for i in 0..5 {
        let l = HttpLabels::new(Direction::Outbound).with_route(format!("/r{i}"));
        http.series(&l)
            .record(Some(StatusCode::NO_CONTENT), ms(1), Class::Success, ms(1));
    }
    let tcp = TcpMetrics::<HttpLabels>::new();
    let conn = tcp.series(&HttpLabels::new(Direction::Inbound));
    conn.opened();
    conn.bytes_read(100);
    conn.bytes_written(250);
    conn.handshake_succeeded();
    conn.handshake_failed("unknown_ca");
    conn.handshake_failed("unknown_ca");
    conn.handshake_failed("timeout");
    let consts = ConstLabels::new([("namespace", "default"), ("pod", "web-7d9f")]).expect("names");
    Registry::new(consts).with(http).with(tcp)
}

#[test]
fn promtool_accepts_the_exposition() {
    let text = populated().encode();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs: install Debian's `prometheus` package (.ci/run does)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool finishes");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool rejected it:\n{report}\n---\n{text}"
    );
    // Lint findings (naming, units) are printed even on success; we want none.
    assert!(report.trim().is_empty(), "promtool lint:\n{report}");
}

/// A sample line: metric name, labels, value.
type Sample = (String, HashMap<String, String>, f64);

/// A strict reader of the text format: every sample belongs to a family announced by `# TYPE`,
/// label values are quoted and escaped correctly, values parse.
fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} twice"
            );
            family = name.to_owned();
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (name, rest) = line.split_once(['{', ' ']).expect("a sample has a name");
        assert!(
            name.starts_with(&family),
            "{name} outside its family {family}"
        );
        let mut labels = HashMap::new();
        let value = if line.as_bytes()[name.len()] == b'{' {
            let mut chars = rest.chars().peekable();
            loop {
                let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("closing quote") {
                        '\\' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            other => panic!("bad escape {other:?} in {line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    other => panic!("unexpected {other:?} in {line}"),
                }
            }
            chars.collect::<String>()
        } else {
            rest.to_owned()
        };
        let value: f64 = value.trim().parse().expect("a number");
        samples.push((name.to_owned(), labels, value));
    }
    (types, samples)
}

#[test]
fn the_exposition_parses_back_to_the_values() {
    let (types, samples) = parse(&populated().encode());
    assert_eq!(types["mesh_http_requests_total"], "counter");
    assert_eq!(types["mesh_http_request_duration_seconds"], "histogram");
    // Quantiles are left to PromQL's histogram_quantile and to mesh-viz, both from the buckets:
    // a summary's quantiles cannot be merged across replicas.
    assert!(!types.contains_key("mesh_http_request_duration_seconds_quantiles"));
    assert_eq!(types["mesh_tcp_tls_handshake_failures_total"], "counter");
    let find = |name: &str, want: &[(&str, &str)]| -> f64 {
        let found: Vec<f64> = samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
            .collect();
        assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
        found[0]
    };
    let web = [
        ("route", "GET /users/{id}"),
        ("namespace", "default"),
        ("pod", "web-7d9f"),
    ];
    assert_eq!(find("mesh_http_requests_total", &web), 102.0);
    let outcome = |o| find("mesh_http_outcomes_total", &[web[0], ("outcome", o)]);
    assert_eq!(
        (outcome("success"), outcome("failure"), outcome("cancelled")),
        (100.0, 1.0, 1.0)
    );
    assert_eq!(find("mesh_http_in_flight", &web), 0.0);
    // Escaped values come back as they were.
    assert_eq!(
        find(
            "mesh_http_requests_total",
            &[("route", "say \"hi\"\\\nbye")]
        ),
        1.0
    );
    // Buckets are cumulative and end at the count; 2*i ms for i < 100, plus 9 ms and 3 ms.
    let bucket = |le| {
        find(
            "mesh_http_request_duration_seconds_bucket",
            &[web[0], ("le", le)],
        )
    };
    assert_eq!(bucket("0.001"), 1.0); // 0 ms
    assert_eq!(bucket("0.005"), 4.0); // 0, 2 and 4 ms, and the cancelled one at 3 ms
    // 0 to 100 ms, 9 and 3 ms, and 102 ms: it shares the HDR bucket of 100 ms (98.3 to 102.4
    // ms), so a bound is exact to a bucket's width.
    assert_eq!(bucket("0.1"), 54.0);
    assert_eq!(bucket("+Inf"), 102.0);
    assert_eq!(
        find("mesh_http_request_duration_seconds_count", &web),
        102.0
    );
    let sum = find("mesh_http_request_duration_seconds_sum", &web);
    assert!((sum - (9.9 + 0.009 + 0.003)).abs() < 1e-9, "{sum}");
    // Past the cap of 3 label sets, the rest share the overflow series.
    assert_eq!(
        find("mesh_http_requests_total", &[("overflow", "true")]),
        4.0
    );
    assert_eq!(find("mesh_http_label_sets_overflowed_total", &[]), 4.0);
    let failures = |r| find("mesh_tcp_tls_handshake_failures_total", &[("reason", r)]);
    assert_eq!((failures("unknown_ca"), failures("timeout")), (2.0, 1.0));
    assert_eq!(find("mesh_tcp_written_bytes_total", &[]), 250.0);
    assert_eq!(find("mesh_tcp_connections_open", &[]), 1.0);
}
