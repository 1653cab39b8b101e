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
