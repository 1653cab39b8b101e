//! Defects 5 and 6: the state directory. hangar runs as root: a symlink
//! planted in its state directory must never make it write (or quote)
//! another file, a directory others can write is refused, and a failed save
//! leaves no temporary file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::Utc;
use hangar::plan::model::{ObservedRunner, RunnerStatus};
use hangar::reconcile::lock::FleetLock;
use hangar::reconcile::memory::OfflineMemory;

const TARGET_TEXT: &str = "root:SECRET-FIRST-LINE:0:0\n";

/// A private state directory and, outside it, a file a symlink may aim at.
fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let top = tempfile::tempdir().unwrap();
    let state = top.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let target = top.path().join("target");
    std::fs::write(&target, TARGET_TEXT).unwrap();
    (top, state, target)
}

fn intact(target: &Path) {
    assert_eq!(std::fs::read_to_string(target).unwrap(), TARGET_TEXT);
}

fn offline_runner() -> ObservedRunner {
    ObservedRunner {
        id: 7,
        name: "f-p-0".into(),
        status: RunnerStatus::Offline,
        busy: false,
        labels: vec![],
        offline_since: None,
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn defect_05_lock_symlink_not_followed() {
    let (_top, state, target) = dirs();
    std::os::unix::fs::symlink(&target, state.join("f.lock")).unwrap();
    let err = FleetLock::try_acquire(&state, "f").unwrap_err().to_string();
    assert!(err.contains("symlink"), "{err}");
    intact(&target);
}

#[test]
fn defect_05_offline_memory_temp_symlink_not_followed() {
    let (_top, state, target) = dirs();
    // Every name the old code could have used for its temporary file.
    for name in [
        "f.offline.json.tmp".to_string(),
        format!("f.offline.json.{}.tmp", std::process::id()),
    ] {
        std::os::unix::fs::symlink(&target, state.join(name)).unwrap();
    }
    let mut runners = [offline_runner()];
    OfflineMemory::new(&state, "f").apply(&mut runners, Utc::now());
    intact(&target);
    assert!(runners[0].offline_since.is_some());
    let saved = std::fs::read_to_string(state.join("f.offline.json")).unwrap();
    assert!(saved.contains('7'), "{saved}");
}

#[tokio::test]
async fn defect_05_simulator_state_temp_symlink_not_followed() {
    let (_top, state, target) = dirs();
    std::os::unix::fs::symlink(&target, state.join("github-sim.tmp")).unwrap();
    let mut config = hangar::sim::SimConfig::new("t0ken");
    config.state_file = Some(state.join("github-sim.json"));
    let sim = hangar::sim::start(config).await.unwrap();
    sim.add_runners("repos/o/r", "x", 1, &[]).unwrap();
    intact(&target);
    let saved = std::fs::read_to_string(state.join("github-sim.json")).unwrap();
    assert!(saved.contains("x-0"), "{saved}");
}

#[test]
fn defect_05_sandbox_node_symlink_refused_without_quoting_its_target() {
    let (_top, state, target) = dirs();
    let sandbox = state.join("sandbox");
    std::fs::create_dir(&sandbox).unwrap();
    std::fs::set_permissions(&sandbox, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&target, sandbox.join("h1.xml")).unwrap();
    let err = match hangar::sandbox::host::SandboxHost::open(&state, "h1", "default") {
        Ok(_) => panic!("a symlinked node file was used"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("symlink"), "{err}");
    assert!(!err.contains("SECRET"), "the target leaked: {err}");
    intact(&target);
}

#[test]
fn defect_05_state_dir_others_can_write_is_refused() {
    let (_top, state, _) = dirs();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = FleetLock::try_acquire(&state, "f").unwrap_err().to_string();
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(names(&state).is_empty(), "{:?}", names(&state));
}

#[test]
fn defect_06_failed_save_leaves_no_temporary_file() {
    let (_top, state, _) = dirs();
    // The save's rename fails: its name is a directory that is not empty.
    std::fs::create_dir(state.join("f.offline.json")).unwrap();
    std::fs::write(state.join("f.offline.json/keep"), "").unwrap();
    let memory = OfflineMemory::new(&state, "f");
    for _ in 0..4 {
        memory.apply(&mut [offline_runner()], Utc::now());
    }
    assert_eq!(names(&state), vec!["f.offline.json".to_string()]);
}
