//! The one `virsh` helper of the tests that use a real libvirtd: run it,
//! list what a test made, and remove it again, in the order libvirt needs.
//! Included with `#[path = "kit/virsh.rs"] mod virsh;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The system daemon `.ci/start-libvirtd` runs.
pub const SYSTEM: &str = "qemu:///system";

/// `virsh -c SYSTEM ARGS`: its output, trimmed, or why it failed.
pub fn virsh(args: &[&str]) -> Result<String, String> {
    virsh_at(SYSTEM, args)
}

/// `virsh -c URI ARGS`.
pub fn virsh_at(uri: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .map_err(|e| format!("virsh: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "virsh -c {uri} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A name part no other run uses: the process and the clock's nanoseconds.
pub fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:x}{nanos:x}", std::process::id())
}

/// `virsh`, or the test fails saying why.
pub fn must(args: &[&str]) -> String {
    virsh(args).unwrap_or_else(|e| panic!("{e}"))
}

/// `Some(reason)` when the system daemon cannot be used here.
pub fn unavailable() -> Option<String> {
    virsh(&["version"]).err()
}

/// Whether the system daemon can be used: `false` (after saying why) when
/// it cannot, unless `HANGAR_REQUIRE_LIBVIRTD=1` (as in `.ci/run`), which
/// makes that a failure.
pub fn usable() -> bool {
    let Some(why) = unavailable() else {
        return true;
    };
    if std::env::var("HANGAR_REQUIRE_LIBVIRTD").as_deref() == Ok("1") {
        panic!("libvirtd is required (HANGAR_REQUIRE_LIBVIRTD=1) but unreachable: {why}");
    }
    eprintln!("SKIPPED: no libvirtd at {SYSTEM}: {why}");
    false
}

fn names(list: &str, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Domains, defined or running, whose name starts with `prefix`, sorted.
pub fn domains(prefix: &str) -> Vec<String> {
    domains_at(SYSTEM, prefix)
}

/// Domains at `uri`, defined or running, whose name starts with `prefix`, sorted.
pub fn domains_at(uri: &str, prefix: &str) -> Vec<String> {
    let list = virsh_at(uri, &["list", "--all", "--name"]).unwrap_or_else(|e| panic!("{e}"));
    names(&list, prefix)
}

/// Running domains whose name starts with `prefix`, sorted.
pub fn running(prefix: &str) -> Vec<String> {
    names(&must(&["list", "--state-running", "--name"]), prefix)
}

/// The volumes of `pool` (refreshed first), sorted.
pub fn volumes(pool: &str) -> Vec<String> {
    must(&["pool-refresh", pool]);
    vol_names(&must(&["vol-list", pool]))
}

/// The volumes of `pool` at `uri` (refreshed first), sorted; none when
/// virsh fails.
pub fn volumes_at(uri: &str, pool: &str) -> Vec<String> {
    let _ = virsh_at(uri, &["pool-refresh", pool]);
    vol_names(&virsh_at(uri, &["vol-list", pool]).unwrap_or_default())
}

/// The names in `virsh vol-list` output, sorted.
fn vol_names(list: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .lines()
        .skip_while(|l| !l.starts_with("---"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// One field of `virsh vol-info --bytes` (`Capacity:`, `Allocation:`).
pub fn vol_field(pool: &str, vol: &str, field: &str) -> String {
    let info = must(&["vol-info", vol, "--pool", pool, "--bytes"]);
    info.lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{field} missing in {info}"))
}

/// Serial console logs in `dir` whose name starts with `prefix`.
pub fn console_logs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect()
}

/// Defines and starts dir pool `pool` at `dir` holding an empty 64 MiB
/// qcow2 `base.qcow2` (guests made from it do not boot an OS).
pub fn make_pool(pool: &str, dir: &Path) {
    let path = dir.display().to_string();
    must(&["pool-define-as", pool, "dir", "--target", &path]);
    must(&["pool-start", pool]);
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(dir.join("base.qcow2"))
        .arg("64M")
        .status()
        .expect("run qemu-img");
    assert!(made.success(), "qemu-img create base.qcow2");
    must(&["pool-refresh", pool]);
}

/// Creates raw volume `vol` in `pool`, the size of `file`, and uploads
/// `file` into it.
pub fn upload_raw(pool: &str, vol: &str, file: &Path) {
    let len = std::fs::metadata(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .len();
    must(&[
        "vol-create-as",
        pool,
        vol,
        &len.to_string(),
        "--format",
        "raw",
    ]);
    must(&[
        "vol-upload",
        "--pool",
        pool,
        vol,
        &file.display().to_string(),
    ]);
}

/// Stops and undefines every domain whose name starts with `prefix`.
pub fn remove_domains(prefix: &str) {
    remove_domains_at(SYSTEM, prefix);
}

/// Stops and undefines every domain at `uri` whose name starts with `prefix`.
pub fn remove_domains_at(uri: &str, prefix: &str) {
    if let Ok(list) = virsh_at(uri, &["list", "--all", "--name"]) {
        for name in names(&list, prefix) {
            let _ = virsh_at(uri, &["destroy", &name]);
            if virsh_at(uri, &["undefine", &name, "--nvram"]).is_err() {
                if let Err(e) = virsh_at(uri, &["undefine", &name]) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
    }
}

/// Deletes the volumes of `pool` at `uri` whose name starts with `prefix`.
pub fn remove_volumes_at(uri: &str, pool: &str, prefix: &str) {
    for vol in volumes_at(uri, pool) {
        if vol.starts_with(prefix) {
            if let Err(e) = virsh_at(uri, &["vol-delete", &vol, "--pool", pool]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Deletes every volume of `pool`, then stops and undefines the pool.
pub fn remove_pool(pool: &str) {
    remove_volumes_at(SYSTEM, pool, "");
    let _ = virsh(&["pool-destroy", pool]);
    let _ = virsh(&["pool-undefine", pool]);
}

/// Removes the isolated network and filter hangar makes for `fleet`.
pub fn remove_fleet_network(fleet: &str) {
    let net = format!("hangar-{fleet}");
    let filter = format!("hangar-isolated-{fleet}");
    let _ = virsh(&["net-destroy", &net]);
    let _ = virsh(&["net-undefine", &net]);
    let _ = virsh(&["nwfilter-undefine", &filter]);
}

/// What a test made, removed when it is dropped (even when the test
/// panics): the domains named `prefix…` at `uri`, then the volumes named
/// `prefix…` of `shared_pool`, then the test's own `pool` with all its
/// volumes, then (with `fleet`) the fleet's network and filter, then the
/// console logs named `prefix…` in `console_dir`, and last the temporary
/// directory that held the pool. All but the domains and `shared_pool`
/// are on the system daemon.
pub struct Cleanup {
    pub uri: String,
    pub prefix: String,
    pub shared_pool: Option<String>,
    pub pool: Option<String>,
    pub fleet: Option<String>,
    pub console_dir: Option<PathBuf>,
    pub dir: Option<tempfile::TempDir>,
}

impl Cleanup {
    /// Removes the domains named `prefix…` on the system daemon, nothing else.
    pub fn domains(prefix: &str) -> Cleanup {
        Cleanup::domains_at(SYSTEM, prefix)
    }

    /// Removes the domains named `prefix…` at `uri`, nothing else.
    pub fn domains_at(uri: &str, prefix: &str) -> Cleanup {
        Cleanup {
            uri: uri.to_string(),
            prefix: prefix.to_string(),
            shared_pool: None,
            pool: None,
            fleet: None,
            console_dir: None,
            dir: None,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_domains_at(&self.uri, &self.prefix);
        if let Some(pool) = &self.shared_pool {
            remove_volumes_at(&self.uri, pool, &self.prefix);
        }
        if let Some(pool) = &self.pool {
            remove_pool(pool);
        }
        if let Some(fleet) = &self.fleet {
            remove_fleet_network(fleet);
        }
        if let Some(dir) = &self.console_dir {
            for log in console_logs(dir, &self.prefix) {
                let _ = std::fs::remove_file(log);
            }
        }
    }
}

/// A dir pool of the run's own on the system daemon, in a temp dir, holding
/// an empty 64 MiB qcow2 `base.qcow2`, and the names the run uses: fleet
/// `<tag><id>`, pool `hangar-<tag>-<id>`. Its guard removes the domains
/// named `<fleet>-…`, the pool with its volumes and the temp dir; a test
/// that makes more says so in `guard.fleet` and `guard.console_dir`.
pub struct PrivatePool {
    pub fleet: String,
    pub pool: String,
    /// The temp dir (the pool is its `pool/`), for the test's other files.
    pub dir: PathBuf,
    pub guard: Cleanup,
}

impl PrivatePool {
    /// `None` (after saying why) when the daemon cannot be used here and
    /// is not required (see [`usable`]).
    pub fn new(tag: &str) -> Option<PrivatePool> {
        if !usable() {
            return None;
        }
        let id = run_id();
        let fleet = format!("{tag}{id}");
        let pool = format!("hangar-{tag}-{id}");
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let pool_dir = dir.join("pool");
        std::fs::create_dir_all(&pool_dir).unwrap();
        let mut guard = Cleanup::domains(&format!("{fleet}-"));
        guard.pool = Some(pool.clone());
        guard.dir = Some(temp);
        make_pool(&pool, &pool_dir);
        Some(PrivatePool {
            fleet,
            pool,
            dir,
            guard,
        })
    }

    /// The pool's directory.
    pub fn pool_dir(&self) -> PathBuf {
        self.dir.join("pool")
    }
}
