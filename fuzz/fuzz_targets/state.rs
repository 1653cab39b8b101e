//! Arbitrary bytes as the state files hangar reads back, through the real
//! readers: the offline and stage memory (`reconcile::memory`), the fleet
//! lock (its pid), and the simulator's state (`SimWorld`). Whatever another
//! process or a planted file put there, reading never panics: a reader
//! takes what it can or nothing, and the next save replaces the file.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::Utc;
use hangar::reconcile::lock::FleetLock;
use hangar::reconcile::memory::{OfflineMemory, StageMemory};
use libfuzzer_sys::fuzz_target;

/// One private state directory per fuzzing process.
fn state_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hangar-fuzz-state-{}", std::process::id()));
        hangar::files::state::ensure_dir(&dir).expect("a private fuzz state dir");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = state_dir();
    for name in ["f.offline.json", "f.stages.h.json", "f.lock"] {
        std::fs::write(dir.join(name), data).expect("write a state file");
    }
    OfflineMemory::new(dir, "f").apply(&mut [], Utc::now());
    StageMemory::new(dir, "f", "h").apply(&mut [], Utc::now());
    // The lock is free: taking it reads nothing back; a held one is not
    // possible in one process, so the pid reader runs through the record.
    drop(FleetLock::try_acquire(dir, "f"));
    let _ = hangar::reconcile::lock::DaemonRecord::running(dir, "f");
    let _ = serde_json::from_slice::<hangar::sim::SimWorld>(data);
    let _ = hangar::files::state::read(&dir.join("f.lock"), 1 << 20);
});
