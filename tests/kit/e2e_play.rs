//! What the end-to-end tests through the `hangar` binary share: the
//! simulator's control API over plain HTTP on loopback, a timeline of
//! phases, log files of child processes, and running `hangar` itself.
//! Included with `#[path = "kit/e2e_play.rs"] mod e2e_play;`.

#![allow(dead_code)]

#[path = "../support/ports.rs"]
mod ports;
pub use ports::free_port;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const HANGAR: &str = env!("CARGO_BIN_EXE_hangar");

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A log file a child process appends to (stdout and stderr share it).
pub fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rest of the first line that carries `needle`, after it.
pub fn line_after<'a>(log: &'a str, needle: &str) -> Option<&'a str> {
    log.lines().find_map(|l| {
        l.find(needle)
            .map(|i| l[i + needle.len()..].trim_end_matches(['\r', ' ']))
    })
}

/// Elapsed time since the start, printed as things happen.
pub struct Timeline {
    pub start: Instant,
    pub phases: Vec<(String, Duration)>,
}

impl Timeline {
    pub fn at(&self, what: &str) {
        eprintln!("[{:>6.1}s] {what}", self.start.elapsed().as_secs_f64());
    }

    pub fn phase(&mut self, what: &str, since: Instant) {
        let d = since.elapsed();
        self.at(&format!("{what} ({:.1}s)", d.as_secs_f64()));
        self.phases.push((what.to_string(), d));
    }
}

/// The simulator's control API over plain HTTP/1.1 on loopback.
pub struct Sim {
    pub port: u16,
    /// The scope whose runners `runners` lists (`repos/OWNER/REPO`).
    pub scope: String,
}

impl Sim {
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("{method} {path}: no HTTP header in the answer"))?;
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{method} {path}: bad status line"))?;
        let mut payload = raw[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            payload = dechunk(&payload);
        }
        let value = if payload.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&payload)
                .map_err(|e| format!("{method} {path}: answer is not JSON: {e}"))?
        };
        Ok((status, value))
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.call(method, path, body.as_ref()) {
            Ok((status, v)) if (200..300).contains(&status) => v,
            Ok((status, v)) => panic!("simulator {method} {path}: {status} {v}"),
            Err(e) => panic!("simulator {method} {path}: {e}"),
        }
    }

    pub fn state(&self) -> Value {
        self.ok("GET", "/_sim/state", None)
    }

    pub fn runners(&self) -> Vec<Value> {
        self.state()["scopes"][self.scope.as_str()]["runners"]
            .as_object()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn runner(&self, name: &str) -> Option<Value> {
        self.runners().into_iter().find(|r| r["name"] == name)
    }

    pub fn registration_tokens(&self) -> Vec<String> {
        self.state()["tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["kind"] == "registration")
            .filter_map(|t| t["token"].as_str().map(str::to_string))
            .collect()
    }
}

pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || body.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[(eol + 4 + size).min(body.len())..];
    }
    out
}

/// `hangar ARGS` to completion, with the test's state dir and token.
pub fn hangar(env: &[(&str, &str)], args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(HANGAR)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the hangar binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// `hangar github-sim` as a child process on a free loopback port, with
/// its state and log in `dir`, answering before this returns.
pub fn start_sim(dir: &Path, token: &str, scope: &str) -> (std::process::Child, Sim) {
    let port = free_port();
    let sim_log = dir.join("github-sim.log");
    let mut child = Command::new(HANGAR)
        .args(["github-sim", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--state")
        .arg(dir.join("github-sim.json"))
        .env("HANGAR_SIM_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(log_file(&sim_log))
        .stderr(log_file(&sim_log))
        .spawn()
        .expect("hangar github-sim starts");
    let sim = Sim {
        port,
        scope: scope.to_string(),
    };
    let up = Instant::now();
    while sim.call("GET", "/_sim/state", None).is_err() {
        if up.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!(
                "the simulator does not answer on port {port}: {}",
                read_log(&sim_log)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, sim)
}

/// A fresh token for the simulator, unique to this run.
pub fn run_token() -> String {
    sha256_hex(&format!("{}-{:?}", std::process::id(), Instant::now()))[..40].to_string()
}
