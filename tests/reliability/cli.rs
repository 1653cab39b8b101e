//! Driving the `hangar` binary (built with `--features failpoints`) on a
//! state directory: the sandbox's node files and the simulator's state file
//! are the whole world, so each process starts where the last one stopped.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::inspect::{self, NodeView};

/// A private copy of the test binary: another engineer's `cargo build`
/// in the same checkout may replace `target/debug/hangar` (without fault
/// points) while the suite runs.
pub fn hangar() -> &'static Path {
    static BIN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &BIN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("hangar");
        let uplifted = PathBuf::from(env!("CARGO_BIN_EXE_hangar"));
        // The uplifted binary is the one cargo built for this test unless a
        // concurrent build replaced it; then the build's own copy under
        // deps/ (same features, hashed name) is the one.
        let mut candidates = vec![uplifted.clone()];
        if let Ok(entries) = std::fs::read_dir(uplifted.parent().unwrap().join("deps")) {
            let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("hangar-") && !n.contains('.'))
                })
                .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
                .collect();
            found.sort();
            candidates.extend(found.into_iter().rev().map(|(_, p)| p));
        }
        // Read each candidate once and check those very bytes: the file may
        // be replaced again while we look.
        let chosen = candidates
            .into_iter()
            .find(|p| {
                let Ok(bytes) = std::fs::read(p) else {
                    return false;
                };
                if !bytes.windows(19).any(|w| w == b"fault point reached") {
                    return false;
                }
                std::fs::write(&bin, &bytes).expect("copy the hangar binary");
                std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .unwrap();
                Command::new(&bin)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"hangar "))
            })
            .unwrap_or_else(|| {
                panic!(
                    "{} was not built with --features failpoints",
                    uplifted.display()
                )
            });
        eprintln!("reliability: using a copy of {}", chosen.display());
        (dir, bin)
    })
    .1
}

/// A state directory and a fleet file in it.
pub struct State {
    pub dir: tempfile::TempDir,
    pub fleet: PathBuf,
}

impl State {
    pub fn new(yaml: &str) -> State {
        let dir = tempfile::tempdir().unwrap();
        let fleet = dir.path().join("fleet.yaml");
        std::fs::write(&fleet, yaml).unwrap();
        State { dir, fleet }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn write_fleet(&self, yaml: &str) {
        std::fs::write(&self.fleet, yaml).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(hangar());
        c.args(args)
            .arg("-f")
            .arg(&self.fleet)
            .env("HANGAR_STATE_DIR", self.state_dir())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("FAILPOINTS")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run hangar")
    }

    /// `reconcile --once` until `diff` says in sync; panics after `max`.
    pub fn converge(&self, max: usize) -> usize {
        for n in 1..=max {
            let o = self.run(&["reconcile", "--once"]);
            let d = self.run(&["diff"]);
            if d.status.code() == Some(0) {
                return n;
            }
            assert!(
                n < max,
                "not converged after {max} passes:\n{}\n{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&d.stdout)
            );
        }
        unreachable!()
    }

    pub fn node(&self, host: &str) -> NodeView {
        inspect::node_file(
            &self.state_dir().join("sandbox").join(format!("{host}.xml")),
            "default",
        )
    }

    pub fn node_text(&self, host: &str) -> String {
        std::fs::read_to_string(self.state_dir().join("sandbox").join(format!("{host}.xml")))
            .unwrap_or_default()
    }

    pub fn sim(&self) -> hangar::sim::SimWorld {
        inspect::sim_file(&self.state_dir().join("github-sim.json"))
    }

    pub fn runners(&self) -> Vec<hangar::sim::SimRunner> {
        inspect::runners(&self.sim(), SIM_SCOPE)
    }

    pub fn assert_converged(
        &self,
        what: &str,
        fleet: &str,
        hosts: &[&str],
        slots: &BTreeSet<String>,
    ) {
        let views: Vec<NodeView> = hosts.iter().map(|h| self.node(h)).collect();
        let refs: Vec<&NodeView> = views.iter().collect();
        inspect::assert_converged(what, fleet, &refs, &self.runners(), slots);
    }
}

/// The scope of `simulator: true` fleets without a repository.
pub const SIM_SCOPE: &str = "repos/sandbox/quickstart";

/// A running process whose stderr is read line by line in a thread.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hangar");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// Wait until a stderr line contains all of `needles`; false on timeout
    /// or when the process ended first.
    pub fn wait_for(&mut self, needles: &[&str], timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = needles.iter().all(|n| line.contains(n));
                    self.stderr.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    #[allow(dead_code)] // tests/deadline.rs
    pub fn child_id(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
        self.stderr.extend(self.lines.try_iter());
        self.stderr
    }

    pub fn wait(mut self) -> (Option<i32>, Vec<String>) {
        let status = self.child.wait().unwrap();
        // The reader thread ends with the pipe.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push(l);
        }
        (status.code(), self.stderr)
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
