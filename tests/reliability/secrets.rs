//! Scenario 12: a canary token through a full cycle at trace level, against
//! `hangar github-sim` in its own process (the real API's shape, token
//! auth). The canary, every registration token the simulator issued and
//! every JIT config it minted must appear nowhere hangar writes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::cli::{hangar, text, State};
use super::results::Scenario;

pub const CANARY: &str = "ghp_CaNaRy0hangar0reliability0canary0000001";

/// The simulator as its own process on a free loopback port.
pub struct SimProcess {
    child: Child,
    pub port: u16,
}

impl SimProcess {
    pub fn start(dir: &Path, token: &str) -> SimProcess {
        let port = super::ports::free_port();
        let state = dir.join("sim.json");
        let child = Command::new(hangar())
            .args([
                "github-sim",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--state",
            ])
            .arg(&state)
            .env("HANGAR_SIM_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start github-sim");
        let sim = SimProcess { child, port };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sim;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("github-sim did not listen on {port}");
    }

    /// One request to the simulator; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        // Chunked answers: the JSON is between the chunk sizes; the
        // callers only search in it.
        (status, body)
    }

    pub fn world(&self) -> serde_json::Value {
        let (_, body) = self.http("GET", "/_sim/state", None);
        let start = body.find('{').unwrap_or(0);
        let end = body.rfind('}').map_or(body.len(), |e| e + 1);
        serde_json::from_str(&body[start..end]).expect("simulator state")
    }

    /// API requests the simulator has answered.
    pub fn requests(&self) -> u64 {
        let (_, body) = self.http("GET", "/_sim/stats", None);
        let start = body.find('{').unwrap_or(0);
        let end = body.rfind('}').map_or(body.len(), |e| e + 1);
        let v: serde_json::Value = serde_json::from_str(&body[start..end]).expect("stats");
        v["total"].as_u64().unwrap_or(0)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a booted guest does: register (persistent) or run its JIT config
/// (ephemeral: the test only knows the runner, so it sets it online).
fn play_guests(sim: &SimProcess, slots: &[(&str, bool)]) {
    let world = sim.world();
    let runners = &world["scopes"]["repos/acme/widgets"]["runners"];
    for (name, ephemeral) in slots {
        let found = runners
            .as_object()
            .and_then(|m| m.values().find(|r| r["name"] == *name).cloned());
        match found {
            Some(r) if r["status"] == "offline" => {
                sim.http("POST", &format!("/_sim/runners/{}/online", r["id"]), None);
            }
            None if !ephemeral => {
                let (_, t) = sim.http(
                    "POST",
                    "/_sim/registration-token",
                    Some(r#"{"scope":"repos/acme/widgets"}"#),
                );
                let t = &t[t.find('{').unwrap()..=t.rfind('}').unwrap()];
                let token: serde_json::Value = serde_json::from_str(t).unwrap();
                let body = serde_json::json!({
                    "scope": "repos/acme/widgets",
                    "name": name,
                    "labels": ["rel", "hangar-rel"],
                    "token": token["token"],
                    "replace": true,
                });
                let (_, r) = sim.http("POST", "/_sim/runners", Some(&body.to_string()));
                let r = &r[r.find('{').unwrap()..=r.rfind('}').unwrap()];
                let r: serde_json::Value = serde_json::from_str(r).unwrap();
                sim.http("POST", &format!("/_sim/runners/{}/online", r["id"]), None);
            }
            _ => {}
        }
    }
}

fn fleet(port: u16, cpus: u32) -> String {
    format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: rel\nspec:\n  github:\n    \
         repository: acme/widgets\n    apiUrl: http://127.0.0.1:{port}\n    auth:\n      \
         tokenEnv: HANGAR_CANARY_TOKEN\n  hosts:\n    - name: h1\n      uri: sandbox\n  pools:\n    \
         - name: p\n      count: 1\n      labels: [rel]\n      vm:\n        cpus: {cpus}\n        \
         memory: 512MiB\n        disk: 4GiB\n        image: base.qcow2\n      cache:\n        \
         size: 1GiB\n    - name: e\n      count: 1\n      ephemeral: true\n      labels: [rel]\n      \
         vm:\n        cpus: {cpus}\n        memory: 512MiB\n        disk: 4GiB\n        image: base.qcow2\n"
    )
}

fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p.display().to_string(), b));
        }
    }
}

fn sha_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[test]
fn s12_secret_canary_appears_nowhere() {
    let sc = Scenario::begin(12);
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), CANARY);
    let state = State::new(&fleet(sim.port, 1));
    let slots = [("rel-p-0", false), ("rel-e-0", true)];
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut jit_shas = std::collections::BTreeSet::new();
    let mut reg_tokens = std::collections::BTreeSet::new();
    let collect_sim = |sim: &SimProcess,
                       jit: &mut std::collections::BTreeSet<String>,
                       reg: &mut std::collections::BTreeSet<String>| {
        let w = sim.world();
        if let Some(rs) = w["scopes"]["repos/acme/widgets"]["runners"].as_object() {
            for r in rs.values() {
                if let Some(s) = r["jit_config_sha256"].as_str() {
                    jit.insert(s.to_string());
                }
            }
        }
        for t in w["tokens"].as_array().into_iter().flatten() {
            if let Some(t) = t["token"].as_str() {
                reg.insert(t.to_string());
            }
        }
    };
    let run = |state: &State, args: &[&str], json_logs: bool| {
        let mut full = vec!["-vvv"];
        if json_logs {
            full.extend(["--log-format", "json"]);
        }
        full.extend_from_slice(args);
        let mut c = state.cmd(&full);
        c.env("RUST_LOG", "trace")
            .env("HANGAR_CANARY_TOKEN", CANARY);
        let o = c.output().unwrap();
        (o.status.code(), text(&o.stdout), text(&o.stderr))
    };
    let steps: Vec<(&str, Vec<&str>, bool)> = vec![
        ("validate", vec!["validate", "-o", "json"], false),
        ("diff", vec!["diff", "-o", "json"], false),
        ("apply", vec!["apply", "--wait", "0s", "-o", "json"], false),
        ("play", vec![], false),
        ("reconcile", vec!["reconcile", "--once"], true),
        ("reconcile", vec!["reconcile", "--once"], false),
        ("status", vec!["status", "-o", "json"], false),
        ("status", vec!["status"], false),
        (
            "render user-data",
            vec!["render", "user-data", "--slot", "rel-e-0"],
            false,
        ),
        (
            "render domain",
            vec!["render", "domain", "--slot", "rel-p-0"],
            false,
        ),
        ("change", vec![], false),
        ("apply", vec!["apply", "--wait", "0s"], true),
        ("play", vec![], false),
        ("reconcile", vec!["reconcile", "--once"], false),
        ("destroy", vec!["destroy", "--yes", "--wait", "10s"], false),
    ];
    let mut commands = 0;
    let mut lines = 0;
    for (what, args, json) in &steps {
        match *what {
            "play" => play_guests(&sim, &slots),
            "change" => state.write_fleet(&fleet(sim.port, 2)),
            _ => {
                let (code, out, err) = run(&state, args, *json);
                assert!(
                    matches!(code, Some(0) | Some(1) | Some(3) | Some(5)),
                    "{what}: exit {code:?}\n{err}"
                );
                lines += out.lines().count() + err.lines().count();
                outputs.push((format!("{what} stdout"), out));
                outputs.push((format!("{what} stderr"), err));
                commands += 1;
            }
        }
        collect_sim(&sim, &mut jit_shas, &mut reg_tokens);
    }
    // The cycle did reach GitHub with the token: the logs are not empty
    // for lack of work.
    assert!(
        sim.requests() > 10,
        "too few API requests: {}",
        sim.requests()
    );
    assert!(lines > 200, "trace logging produced only {lines} lines");
    assert!(
        jit_shas.len() >= 2,
        "JIT configs minted: {}",
        jit_shas.len()
    );
    assert!(!reg_tokens.is_empty(), "no registration token issued");

    let mut files = Vec::new();
    files_under(&state.state_dir(), &mut files);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("h1.xml")),
        "no sandbox node file"
    );
    let mut haystacks: Vec<(String, String)> = outputs;
    for (p, b) in files {
        haystacks.push((p, String::from_utf8_lossy(&b).into_owned()));
    }
    let needles: Vec<(&str, String)> = std::iter::once(("canary token", CANARY.to_string()))
        .chain(reg_tokens.iter().map(|t| ("registration token", t.clone())))
        .collect();
    for (where_, hay) in &haystacks {
        for (what, needle) in &needles {
            assert!(
                !hay.contains(needle.as_str()),
                "{what} leaked into {where_}"
            );
        }
        // A JIT config is long base64; hash every such word and compare.
        for word in hay.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c))) {
            if word.len() >= 40 {
                assert!(
                    !jit_shas.contains(&sha_hex(word)),
                    "a JIT config leaked into {where_}"
                );
            }
        }
    }
    sc.pass(
        "canary API token via tokenEnv to `hangar github-sim` (own process); every command at -vvv / RUST_LOG=trace, \
         text and JSON logs: validate, diff, apply, reconcile, status, render, a spec change (JIT minted again), destroy",
        commands,
        &format!(
            "the canary, {} registration token(s) and {} JIT config(s) (by SHA-256 of every long word) found in none of {} outputs/files \
             ({lines} log/output lines; stdout, stderr, JSON, state dir incl. sandbox domain XML and metadata)",
            reg_tokens.len(),
            jit_shas.len(),
            haystacks.len()
        ),
    );
}
