//! The daemon's Prometheus metrics, through the binary on the sandbox:
//! scraped over loopback, the exposition checked by `promtool check
//! metrics` (Debian's `prometheus` package), values the test knows read
//! back, and the example alert rules checked by `promtool check rules`.

#[path = "support/bin.rs"]
mod bin;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bin::*;

fn promtool() -> &'static str {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool is missing: install Debian's `prometheus` (.ci/install-deps)"
    );
    "promtool"
}

/// `GET /metrics` over plain HTTP/1.0, with an `Accept` header when given.
fn scrape(addr: &str, accept: Option<&str>) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    (head.to_string(), body.to_string())
}

/// The value of the series `series` (name and labels, exactly as exposed).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn promtool_check_metrics(body: &str) {
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n--- exposition\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_daemon_serves_metrics_promtool_accepts_with_values_the_file_implies() {
    let sb = Sandbox::new();
    let file = quickstart();
    let (mut child, rx) = sb.reconcile(&file, "1s", &["--metrics", "127.0.0.1:0"]);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, "serving metrics on http://");
    let addr = seen
        .last()
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap()
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    // Until all four runners of the quickstart are up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (_, body) = scrape(&addr, None);
        if value(&body, "hangar_runners{state=\"online\"}") == Some(4.0)
            && value(&body, "hangar_passes_total").is_some_and(|p| p >= 2.0)
        {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "runners never all online:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    promtool_check_metrics(&body);
    assert_eq!(
        value(&body, "hangar_slots{pool=\"build\",stage=\"online\"}"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "hangar_slots{pool=\"pr\",stage=\"failed\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        value(&body, "hangar_runners{state=\"busy\"}"),
        Some(0.0),
        "{body}"
    );
    // `cache.size: 2GiB` in the file.
    assert_eq!(
        value(
            &body,
            "hangar_cache_size_bytes{pool=\"build\",slot=\"quickstart-build-0\",host=\"sandbox-1\"}"
        ),
        Some(2147483648.0),
        "{body}"
    );
    // Four creates, each done once.
    assert_eq!(
        value(
            &body,
            "hangar_actions_total{kind=\"create\",outcome=\"done\"}"
        ),
        Some(4.0),
        "{body}"
    );
    // Two VMs of 1 cpu and 512MiB on each sandbox host.
    assert_eq!(
        value(&body, "hangar_host_cpus_used{host=\"sandbox-1\"}"),
        Some(2.0),
        "{body}"
    );
    let last = value(&body, "hangar_last_successful_pass_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 30.0, "last success {last}, now {now}");
    assert!(
        value(&body, "hangar_github_rate_limit_remaining").is_some(),
        "{body}"
    );

    // OpenMetrics for a scraper that asks for it.
    let (head, open) = scrape(&addr, Some("application/openmetrics-text; version=1.0.0"));
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(open.trim_end().ends_with("# EOF"), "{open}");

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let code = wait_exit(&mut child, Duration::from_secs(20));
    seen.extend(rx.try_iter());
    assert_eq!(code, Some(0), "{}", seen.join("\n"));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still serving after exit"
    );
}

#[test]
fn metrics_are_off_by_default_and_need_the_daemon() {
    let sb = Sandbox::new();
    let f = quickstart();
    let r = sb.run(&[
        "reconcile",
        "-f",
        f.to_str().unwrap(),
        "--once",
        "--metrics",
    ]);
    assert_eq!(r.code, 2, "{r}");
    let r = sb.run(&reconcile_args(
        f.to_str().unwrap(),
        "1s",
        &["--max-passes", "1"],
    ));
    assert_eq!(r.code, 0, "{r}");
    assert!(!r.stderr.contains("serving metrics"), "{r}");
}

#[test]
fn the_example_alert_rules_pass_promtool() {
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prometheus/hangar-alerts.yaml");
    let out = std::process::Command::new(promtool())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&rules).unwrap();
    for series in [
        "hangar_last_successful_pass_timestamp_seconds",
        "hangar_cache_used_bytes",
    ] {
        assert!(text.contains(series), "{series}");
    }
}
