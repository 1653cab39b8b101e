//! The small Debian image the end-to-end tests boot, built (or reused from
//! its cache) by `tests/e2e/build-image.sh`, and the rule for when they run.
//! Included with `#[path = "kit/e2e_image.rs"] mod e2e_image;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// What `build-image.sh` made: paths on this machine and the kernel command
/// line the image boots with.
pub struct BaseImage {
    pub image: String,
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    /// Where the image holds the stand-in runner.
    pub runner_dir: String,
}

/// Whether the guest-booting tests run: only with `HANGAR_REQUIRE_LIBVIRTD=1`
/// (as in `.ci/run`); otherwise they say how to run them and pass.
pub fn required(what: &str) -> bool {
    if std::env::var("HANGAR_REQUIRE_LIBVIRTD").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "SKIPPED: {what} needs a real libvirtd; run .ci/install-deps and \
         .ci/start-libvirtd, then set HANGAR_REQUIRE_LIBVIRTD=1"
    );
    false
}

/// Builds the image on first use (a few minutes), then reuses it.
pub fn build_image() -> BaseImage {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/build-image.sh");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/e2e/build-image.sh runs");
    assert!(out.status.success(), "build-image.sh failed");
    eprintln!("base image ready in {:.0?}", started.elapsed());
    let vars: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let get = |k: &str| {
        vars.get(k)
            .unwrap_or_else(|| panic!("build-image.sh printed no {k}"))
            .clone()
    };
    BaseImage {
        image: get("IMAGE"),
        kernel: get("KERNEL"),
        initrd: get("INITRD"),
        cmdline: get("CMDLINE"),
        runner_dir: get("RUNNER_DIR"),
    }
}

/// A wait on a booting guest that follows its progress, as hangar's own boot
/// timeout does: it gives up when the console log has not grown for `idle`,
/// or after `cap` whatever happens. Software emulation on a loaded machine
/// is several times slower than on an idle one; a fixed deadline fails
/// there while the guest is still making progress.
pub struct Progress {
    started: Instant,
    last_len: usize,
    last_change: Instant,
    idle: std::time::Duration,
    cap: std::time::Duration,
}

impl Progress {
    pub fn new(idle: std::time::Duration, cap: std::time::Duration) -> Self {
        let now = Instant::now();
        Progress {
            started: now,
            last_len: 0,
            last_change: now,
            idle,
            cap,
        }
    }

    /// Whether to give up, given the console log as it is now.
    pub fn stalled(&mut self, log: &str) -> bool {
        if log.len() != self.last_len {
            self.last_len = log.len();
            self.last_change = Instant::now();
        }
        self.last_change.elapsed() > self.idle || self.started.elapsed() > self.cap
    }

    /// Why it gave up, for the failure message.
    pub fn why(&self) -> String {
        format!(
            "{:.0?} since the start, {:.0?} since the console last grew (limits {:?} idle, {:?} in all)",
            self.started.elapsed(),
            self.last_change.elapsed(),
            self.idle,
            self.cap
        )
    }
}
