//! Arbitrary bytes as the state files hangar reads back, through the real
//! readers: the offline and stage memory (`reconcile::memory`), the scale
//! cooldown memory (`<fleet>.scale.json`), the runner groups' access as
//! last read (`<fleet>.access.json`), the fleet lock (its pid), the
//! simulator's state (`SimWorld`), the runner list's saved pages
//! (`<fleet>.github.json`) and a host's kept observation
//! (`<fleet>.<host>.observed.json`, read when a libvirt host connects).
//! Whatever another process or a planted file put there, reading never
//! panics: a reader takes what it can or nothing, and the next save
//! replaces the file.
//!
//! Beyond not panicking:
//! - a file that is not what the writer writes for this list or host (not
//!   a JSON object; another format, hangar version, API URL, scope, URI,
//!   pool or libvirtd; a network where the host has none) is as if absent:
//!   the saved pages load as none, the scale and access memory as empty,
//!   and a host
//!   observes what and at the cost a host without the file does;
//! - what the writers write is read back: the scale and access memory and
//!   the saved
//!   pages as the same value (built from the same input), the kept
//!   observation as the same VMs, at one libvirt call (the listing).

#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use hangar::model::host::{HostIdentity, NetworkAttachment};
use hangar::plan::model::{
    GroupAccess, GroupVisibility, ObservedRunner, ObservedVm, RunnerStatus,
};
use hangar::providers::github::saved::SavedPages;
use hangar::providers::github::CachedPage;
use hangar::providers::libvirt::{HostConfig, LibvirtHost};
use hangar::providers::Hypervisor;
use hangar::reconcile::lock::FleetLock;
use hangar::reconcile::memory::{OfflineMemory, StageMemory};
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The fleet of the node fixture's domains.
const FLEET: &str = "quickstart";
const API_URL: &str = "http://127.0.0.1:1";
const SCOPE: &str = "repos/acme/widgets";

/// A test-driver node with two of the fleet's domains and their volumes,
/// as the sandbox saved it (console log paths made up).
const NODE: &str = include_str!("../fixtures/node.xml");

struct Rig {
    /// Private to this process.
    dir: PathBuf,
    host: HostConfig,
    identity: HostIdentity,
    /// What a host without a kept observation observes, and its libvirt
    /// calls up to then.
    afresh: (Vec<ObservedVm>, u64),
    /// The fields that make a kept observation this host's, as written.
    kept_header: Vec<(&'static str, Value)>,
    /// The same for the saved pages.
    pages_header: Vec<(&'static str, Value)>,
    runtime: tokio::runtime::Runtime,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        // In memory where there is such a place: every save is fsynced
        // (twice), which on a disk costs more than the rest of an input.
        let base = [PathBuf::from("/dev/shm"), std::env::temp_dir()]
            .into_iter()
            .find(|d| d.is_dir())
            .expect("a temporary directory");
        // Those of fuzzing processes that are gone go first (in memory,
        // they would pile up run after run).
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("hangar-fuzz-state-"));
            if pid.is_some_and(|pid| !std::path::Path::new("/proc").join(pid).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(format!("hangar-fuzz-state-{}", std::process::id()));
        hangar::files::state::ensure_dir(&dir).expect("a private fuzz state dir");
        // The node file is at one path for every process, so that a kept
        // observation in the corpus names this host (its URI and libvirtd
        // identity name the file); it is only ever read.
        let shared = base.join("hangar-fuzz-node");
        hangar::files::state::ensure_dir(&shared).expect("the fuzz node dir");
        let node = shared.join("node.xml");
        hangar::files::state::write_atomic(&node, NODE.as_bytes()).expect("the node file");
        let host = HostConfig {
            name: "h".into(),
            uri: format!("test://{}", node.display()),
            storage_pool: "default".into(),
            network: NetworkAttachment::None,
            domain_type: None,
            console_dir: Some(dir.join("console")),
            volume_record: None,
            observed: Some(dir.join(format!("{FLEET}.h.observed.json"))),
            image_dirs: Vec::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let _ = std::fs::remove_file(host.observed.as_ref().unwrap());
        let first = LibvirtHost::connect(host.clone()).expect("connect to the fixture node");
        let vms = runtime
            .block_on(first.observe(FLEET))
            .expect("observe the fixture");
        assert_eq!(vms.len(), 2, "the fixture's domains are the fleet's");
        let afresh = (vms, first.libvirt_calls());
        let identity = first.identity();
        drop(first);
        let kept = read_object(host.observed.as_ref().unwrap());
        let kept_header = header(&kept, &["format", "hangar", "uri", "storagePool"]);
        assert_eq!(kept.get("network"), Some(&Value::Null));

        let pages = dir.join("written.github.json");
        SavedPages::new(&pages, API_URL, SCOPE).save(&HashMap::new());
        let pages_header = header(
            &read_object(&pages),
            &["format", "hangar", "apiUrl", "scope"],
        );
        Rig {
            dir,
            host,
            identity,
            afresh,
            kept_header,
            pages_header,
            runtime,
        }
    })
}

fn read_object(path: &std::path::Path) -> serde_json::Map<String, Value> {
    let bytes = std::fs::read(path).expect("the writer wrote its file");
    match serde_json::from_slice(&bytes).expect("the writer writes JSON") {
        Value::Object(o) => o,
        other => panic!("the writer wrote {other}"),
    }
}

fn header(
    written: &serde_json::Map<String, Value>,
    keys: &[&'static str],
) -> Vec<(&'static str, Value)> {
    keys.iter()
        .map(|k| (*k, written.get(*k).expect("the writer wrote it").clone()))
        .collect()
}

/// `data` as a JSON object, if it is one.
fn object(data: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice(data) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    }
}

/// `file` carries every field of `header` as the writer writes it.
fn carries(file: &serde_json::Map<String, Value>, header: &[(&str, Value)]) -> bool {
    header.iter().all(|(k, v)| file.get(*k) == Some(v))
}

fn kept_observation(rig: &Rig, data: &[u8]) {
    std::fs::write(rig.host.observed.as_ref().unwrap(), data).expect("write a state file");
    let host = LibvirtHost::connect(rig.host.clone()).expect("connect to the fixture node");
    let vms = rig
        .runtime
        .block_on(host.observe(FLEET))
        .expect("a kept observation never fails an observation");
    let calls = host.libvirt_calls();
    let this_hosts = object(data).is_some_and(|o| {
        carries(&o, &rig.kept_header)
            && o.get("network").is_none_or(Value::is_null)
            && o.get("identity").is_some_and(|i| {
                serde_json::from_value::<HostIdentity>(i.clone()).ok() == Some(rig.identity.clone())
            })
    });
    if !this_hosts {
        assert_eq!(
            (&vms, calls),
            (&rig.afresh.0, rig.afresh.1),
            "a foreign or unreadable file is as if absent"
        );
    }
    drop(host);
    // What the observation left is where the next process starts.
    let next = LibvirtHost::connect(rig.host.clone()).expect("connect to the fixture node");
    let again = rig
        .runtime
        .block_on(next.observe(FLEET))
        .expect("observe again");
    assert_eq!(again, vms, "the kept observation reads back");
    assert_eq!(
        next.libvirt_calls(),
        1,
        "the next process asks for the listing alone"
    );
}

fn time(u: &mut Unstructured) -> ArbResult<DateTime<Utc>> {
    // What hangar writes: times of this era (chrono's own range reaches
    // years that RFC 3339 cannot write).
    let secs = u.int_in_range(0..=253_402_300_799i64)?;
    let nanos = u.int_in_range(0..=999_999_999u32)?;
    Ok(DateTime::from_timestamp(secs, nanos).expect("in range"))
}

fn scale_round_trip(rig: &Rig, u: &mut Unstructured) -> ArbResult<()> {
    let mut m = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=4u8)? {
        m.insert(u.arbitrary::<String>()?, time(u)?);
    }
    OfflineMemory::new(&rig.dir, "f").remember_scale(&m);
    assert_eq!(
        OfflineMemory::new(&rig.dir, "f").scale(),
        m,
        "the scale memory reads back"
    );
    Ok(())
}

fn access_round_trip(rig: &Rig, u: &mut Unstructured) -> ArbResult<()> {
    let mut read = BTreeMap::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        let visibility = match u.int_in_range(0..=2u8)? {
            0 => GroupVisibility::All,
            1 => GroupVisibility::Private,
            _ => GroupVisibility::Selected(u.arbitrary()?),
        };
        let access = GroupAccess {
            visibility,
            allows_public: u.arbitrary()?,
        };
        read.insert(u.arbitrary::<String>()?, access);
    }
    // Every group asked: what was there before is replaced by the read.
    let mut asked: Vec<String> = read.keys().cloned().collect();
    asked.extend(OfflineMemory::new(&rig.dir, "f").access().into_keys());
    OfflineMemory::new(&rig.dir, "f").remember_access(&asked, &read);
    assert_eq!(
        OfflineMemory::new(&rig.dir, "f").access(),
        read,
        "the access memory reads back"
    );
    Ok(())
}

fn runner(u: &mut Unstructured) -> ArbResult<ObservedRunner> {
    Ok(ObservedRunner {
        id: u.arbitrary()?,
        name: u.arbitrary()?,
        status: if u.arbitrary()? {
            RunnerStatus::Online
        } else {
            RunnerStatus::Offline
        },
        busy: u.arbitrary()?,
        labels: u.arbitrary()?,
        offline_since: if u.arbitrary()? { Some(time(u)?) } else { None },
    })
}

fn pages_round_trip(rig: &Rig, u: &mut Unstructured) -> ArbResult<()> {
    let mut pages = HashMap::new();
    for _ in 0..u.int_in_range(0..=3u8)? {
        let mut runners = Vec::new();
        for _ in 0..u.int_in_range(0..=3u8)? {
            runners.push(runner(u)?);
        }
        let page = CachedPage {
            etag: u.arbitrary()?,
            runners,
            next: u.arbitrary()?,
            total: u.arbitrary()?,
        };
        pages.insert(u.arbitrary::<String>()?, page);
    }
    let saved = SavedPages::new(&rig.dir.join("f.github.json"), API_URL, SCOPE);
    saved.save(&pages);
    assert_eq!(saved.load(), pages, "the saved pages read back");
    // Another list's file is not used.
    let other = SavedPages::new(&rig.dir.join("f.github.json"), API_URL, "repos/acme/other");
    assert!(
        other.load().is_empty(),
        "another scope's pages are not used"
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let rig = rig();
    let dir = &rig.dir;
    for name in [
        "f.offline.json",
        "f.stages.h.json",
        "f.lock",
        "f.scale.json",
        "f.access.json",
        "f.github.json",
    ] {
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

    let scale = OfflineMemory::new(dir, "f").scale();
    if object(data).is_none() {
        assert!(
            scale.is_empty(),
            "a scale memory that is no JSON object is empty"
        );
    }
    let access = OfflineMemory::new(dir, "f").access();
    if object(data).is_none() {
        assert!(
            access.is_empty(),
            "an access memory that is no JSON object is empty"
        );
    }
    let pages = SavedPages::new(&dir.join("f.github.json"), API_URL, SCOPE).load();
    if !object(data).is_some_and(|o| carries(&o, &rig.pages_header)) {
        assert!(
            pages.is_empty(),
            "another list's or version's pages are not used"
        );
    }
    // A host connection and two observations cost milliseconds, twenty
    // times the rest: only for what could be a kept observation (anything
    // else fails its JSON parse at the first byte, before the host is read).
    if data.trim_ascii_start().starts_with(b"{") {
        kept_observation(rig, data);
    }

    let mut u = Unstructured::new(data);
    let _ = scale_round_trip(rig, &mut u);
    let _ = access_round_trip(rig, &mut u);
    let _ = pages_round_trip(rig, &mut u);
});
