//! The simulator served by the real binary (`hangar github-sim`) on a
//! loopback port, its control API, and the guests' part that a served
//! simulator leaves to its caller. Shared by the binary-level tests.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hangar");

pub struct Served {
    pub child: Child,
    pub port: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[path = "ports.rs"]
mod ports;
pub use ports::free_port;

/// `hangar github-sim` on a free loopback port (`Served::port`). Another
/// test may take the same free port between its probe and the bind: the
/// process that loses exits at once, so a simulator that is not still
/// running shortly after it answered is started again on another port.
pub fn serve(extra: &[&str]) -> Served {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new(BIN)
            .args(["github-sim", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--token", "not-the-apps"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            && child.try_wait().unwrap().is_none()
        {
            assert!(Instant::now() < deadline, "github-sim did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        if child.try_wait().unwrap().is_none() {
            return Served { child, port };
        }
    }
    panic!("github-sim could not listen on a free port in 5 tries");
}

/// One request to the simulator's control API; the answer's body.
pub fn control(port: u16, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The guest's part, which the served simulator leaves to its caller: every
/// runner that appears offline runs (`run.sh --jitconfig`) and comes online.
pub fn play_guests(port: u16, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let state: serde_json::Value =
            serde_json::from_str(&control(port, "GET", "/_sim/state")).unwrap_or_default();
        for scope in state["scopes"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            for r in scope["runners"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                if r["status"] == "offline" {
                    control(port, "POST", &format!("/_sim/runners/{}/online", r["id"]));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
