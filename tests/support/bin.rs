//! The real binary on a private state dir: running it, reading its
//! output and its stderr as it goes. Shared by the binary-level tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_hangar");

pub fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.yaml")
}

pub struct Sandbox {
    pub state: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            state: tempfile::tempdir().unwrap(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--color", "never"])
            .args(args)
            .env("HANGAR_STATE_DIR", self.state.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Start `hangar ARGS` with its stderr read line by line on a thread.
    pub fn spawn(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = stderr_lines(&mut child);
        (child, rx)
    }

    /// Start the daemon: `hangar reconcile -f FILE --every EVERY MORE…`.
    pub fn reconcile(
        &self,
        file: &Path,
        every: &str,
        more: &[&str],
    ) -> (Child, mpsc::Receiver<String>) {
        self.spawn(&reconcile_args(file.to_str().unwrap(), every, more))
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        Run::from(out, args)
    }

    /// `status -o json` of `file`.
    pub fn status(&self, file: &Path) -> Value {
        let r = self.run(&["status", "-f", file.to_str().unwrap(), "-o", "json"]);
        assert_eq!(r.code, 0, "{r}");
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r}"))
    }

    /// A copy of the quickstart file under the state dir, edited by `edit`.
    pub fn edited(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let text = std::fs::read_to_string(quickstart()).unwrap();
        let path = self.state.path().join(name);
        std::fs::write(&path, edit(text)).unwrap();
        path
    }
}

pub struct Run {
    pub args: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output, args: &[&str]) -> Run {
        Run {
            args: args.join(" "),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hangar {} exited {}\n--- stdout\n{}--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }
}

/// `reconcile -f FILE --every EVERY MORE…`.
pub fn reconcile_args<'a>(file: &'a str, every: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["reconcile", "-f", file, "--every", every];
    args.extend_from_slice(more);
    args
}

/// Slots of a `status -o json` that have a VM or a runner.
pub fn occupied(status: &Value) -> Vec<String> {
    status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["vm"].is_null() || !s["runner"].is_null())
        .map(|s| s["slot"].as_str().unwrap().to_string())
        .collect()
}

/// Collects a child's stderr on a thread, line by line.
pub fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn wait_for_line(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(what);
                seen.push(line);
                if hit {
                    return;
                }
            }
            Err(_) => panic!("no line with {what:?}; stderr so far:\n{}", seen.join("\n")),
        }
    }
}

pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Replace `path`'s content at once, so the daemon never reads half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
