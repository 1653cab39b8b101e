//! The end-to-end proof, through the real `hangar` binary on a real libvirtd
//! (`qemu:///system`, software emulation), with GitHub played by
//! `hangar github-sim` in a child process on a loopback port.
//!
//! One fleet, one host, two pools: an ephemeral slot (JIT runner) and a
//! persistent slot (`config.sh` runner), both booting the e2e base image
//! (tests/e2e/build-image.sh) by direct kernel boot, with a cache disk.
//!
//! 1. `hangar apply --wait` creates both VMs (booting in parallel). The test
//!    reads their serial logs and plays GitHub's part through the
//!    simulator's control API, as the real runner would have told GitHub:
//!    the persistent runner registers when `config.sh` runs (with the
//!    registration token the guest was given) and comes online when `run.sh`
//!    listens; the JIT runner comes online when `run.sh --jitconfig` starts.
//!    apply removes the seeds and converges.
//! 2. GitHub assigns the ephemeral runner a job (`/_sim/.../job/start`); the
//!    guest has no network, so the job reaches the stand-in runner as a
//!    hot-plugged disk (see tests/e2e/runner/run.sh). The job writes a file
//!    on the cache disk; the runner exits; the guest powers off; the domain
//!    is shut off.
//!    Meanwhile GitHub assigns the persistent runner a job, and queues the
//!    next one right behind it (both hot-plugged disks; the stand-in runner
//!    takes them in turn). Both guests' agents answer: `hangar status`
//!    shows their root and cache use as the guests count it, and no
//!    address (they have no NIC). The persistent pool lists a key made for
//!    the test: the guest gets a NIC on qemu's user network that reaches
//!    nothing but a forward from 127.0.0.1 to its port 22 (hot-plugged
//!    through the qemu monitor: tests talk to loopback only), and `ssh -i
//!    KEY github@127.0.0.1` logs in, the host key checked; `status` then
//!    shows the NIC's address.
//! 3. The persistent pool's spec changes; `hangar reconcile --once`
//!    replaces the spent ephemeral VM with generation 2, which boots with
//!    the same cache disk and prints the file generation 1 wrote, and
//!    drains the busy persistent runner over the guest agent: its job runs
//!    to its end uncut, the queued job never starts, the runner stops; the
//!    next pass replaces the persistent VM.
//! 4. `hangar destroy --yes` leaves no domain, no volume, no console log and
//!    no runner registration of the fleet.
//!
//! Runs when HANGAR_REQUIRE_LIBVIRTD=1 (`.ci/run`), is skipped with a
//! message otherwise. Needs root (the image build and qemu:///system).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "kit/e2e_image.rs"]
mod e2e_image;
#[path = "kit/e2e_play.rs"]
mod e2e_play;
#[path = "kit/virsh.rs"]
mod virsh;
use e2e_image::{build_image, BaseImage, Progress};
use e2e_play::{
    free_port, hangar, line_after, log_file, read_log, run_token, sha256_hex, start_sim, tail,
    Timeline, HANGAR,
};
use virsh::{domains as domains_named, must, virsh, volumes, SYSTEM as URI};
/// Where hangar's libvirt provider writes serial console logs.
const CONSOLE_DIR: &str = "/var/log/hangar";
const REPOSITORY: &str = "e2e/hangar";
const SCOPE: &str = "repos/e2e/hangar";
const TOKEN_ENV: &str = "HANGAR_E2E_GITHUB_TOKEN";
const LABEL: &str = "e2e";
const CACHE_BYTES: u64 = 1 << 30;
/// The cache budget, low so that a few hundred MB of stale blobs exceed it.
const PRUNE_ABOVE: u64 = 20;
/// Makes the stand-in JIT runner wait for a job instead of running one at once.
const JOBS_BY_HOTPLUG: &str = "hangar_e2e.jobs=hotplug";
/// What the stand-in runner prints on the console.
const RUNNER: &str = "hangar-e2e-runner: ";

// Bounds per phase (software emulation; a boot to "runner started" takes
// about 90 s with both guests booting at once).
const APPLY_WAIT: &str = "10m";
const APPLY_TIMEOUT: Duration = Duration::from_secs(660);
const JOB_TIMEOUT: Duration = Duration::from_secs(180);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(120);
/// Generation 2 boots as slowly as the first: a guest that stops writing
/// to its console for this long is stuck...
const REBOOT_IDLE: Duration = Duration::from_secs(240);
/// ...and no boot may take longer than this at all.
const REBOOT_CAP: Duration = Duration::from_secs(1200);

fn console_path(slot: &str, generation: u64) -> PathBuf {
    Path::new(CONSOLE_DIR).join(format!("{slot}-g{generation}.console.log"))
}

/// Everything this test made, removed even when it panics: child processes
/// first (so that no hangar run acts meanwhile), then the fleet's domains,
/// the pool's volumes and the pool, and the fleet's console logs.
struct Guard {
    fleet: String,
    pool: Option<String>,
    children: Vec<(&'static str, Child)>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (what, child) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                eprintln!("cleanup: stopping {what} (pid {})", child.id());
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let prefix = format!("{}-", self.fleet);
        if let Ok(list) = virsh(&["list", "--all", "--name"]) {
            for dom in list
                .lines()
                .map(str::trim)
                .filter(|n| n.starts_with(&prefix))
            {
                eprintln!("cleanup: removing domain {dom}");
                let _ = virsh(&["destroy", dom]);
                if let Err(e) = virsh(&["undefine", dom]) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
        if let Some(pool) = &self.pool {
            if let Ok(out) = virsh(&["vol-list", pool]) {
                for vol in out
                    .lines()
                    .skip_while(|l| !l.starts_with("---"))
                    .skip(1)
                    .filter_map(|l| l.split_whitespace().next())
                {
                    eprintln!("cleanup: removing volume {vol}");
                    if let Err(e) = virsh(&["vol-delete", "--pool", pool, vol]) {
                        eprintln!("cleanup: {e}");
                    }
                }
            }
            if let Err(e) = virsh(&["pool-destroy", pool]) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Ok(dir) = std::fs::read_dir(CONSOLE_DIR) {
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// `per_memory`: the persistent pool's memory (changing it changes the
/// pool's spec); `ssh_key`: the public key the persistent pool lets log in.
fn fleet_yaml(
    fleet: &str,
    port: u16,
    pool: &str,
    base: &BaseImage,
    per_memory: &str,
    ssh_key: &str,
) -> String {
    let pool_yaml = |name: &str, ephemeral: bool, memory: &str, keys: &[&str]| {
        format!(
            "    - name: {name}
      count: 1
      ephemeral: {ephemeral}
      labels: [{LABEL}]
      vm:
        cpus: 1
        memory: {memory}
        disk: 4GiB
        sshAuthorizedKeys: {keys}
        image: {image}
        boot:
          kernel: {kernel}
          initrd: {initrd}
          cmdline: {cmdline}
      docker:
        source: preinstalled
      runner:
        preinstalled: {runner_dir}
      cache:
        size: 1GiB
        pruneAbove: {PRUNE_ABOVE}%
",
            keys = json!(keys),
            image = json!(base.image),
            kernel = json!(base.kernel),
            initrd = json!(base.initrd),
            cmdline = json!(format!("{} {JOBS_BY_HOTPLUG}", base.cmdline)),
            runner_dir = json!(base.runner_dir),
        )
    };
    format!(
        "apiVersion: hangar/v1
kind: Fleet
metadata:
  name: {fleet}
spec:
  github:
    repository: {REPOSITORY}
    apiUrl: http://127.0.0.1:{port}
    auth:
      tokenEnv: {TOKEN_ENV}
  hosts:
    - name: local
      uri: {URI}
      storagePool: {pool}
      domainType: qemu
      cpuOvercommit: 16
      imageDirs: [{image_dir}]
      network:
        mode: none
  pools:
{eph}{per}  policy:
    bootTimeout: 15m
",
        image_dir = std::path::Path::new(&base.image)
            .parent()
            .expect("the image path has a directory")
            .display(),
        eph = pool_yaml("eph", true, "1536MiB", &[]),
        per = pool_yaml("per", false, per_memory, &[ssh_key]),
    )
}

/// The arguments of the stand-in `config.sh` line: `--flag value` or `--flag`.
fn parse_args(line: &str) -> BTreeMap<String, Option<String>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if let Some(flag) = w.strip_prefix("--") {
            match words.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    out.insert(flag.to_string(), Some(v.to_string()));
                    i += 2;
                    continue;
                }
                _ => {
                    out.insert(flag.to_string(), None);
                }
            }
        }
        i += 1;
    }
    out
}

/// Hot-plugs a small empty disk with `serial` into the running `dom`: how
/// GitHub's "here is a job" reaches a guest without network (see
/// tests/e2e/runner/run.sh).
fn hotplug(dir: &Path, dom: &str, target: &str, serial: &str) {
    let disk = dir.join(format!("{serial}.img"));
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    must(&[
        "attach-disk",
        dom,
        disk.to_str().unwrap(),
        target,
        "--targetbus",
        "virtio",
        "--driver",
        "qemu",
        "--subdriver",
        "raw",
        "--mode",
        "readonly",
        "--serial",
        serial,
        "--live",
    ]);
}

/// Waits until the console log at `path` holds every one of `needles`.
fn wait_for_console(path: &Path, what: &str, needles: &[&str], timeout: Duration) -> String {
    let since = Instant::now();
    loop {
        let log = read_log(path);
        if needles.iter().all(|n| log.contains(n)) {
            return log;
        }
        assert!(
            !log.contains("hangar: failed") && since.elapsed() < timeout,
            "{what}: no {needles:?} on the console within {timeout:?}:\n{}",
            tail(&log, 60)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The guest's own count of one file system in `hangar status -o json`.
fn guest_fs(slot: &Value, fs: &str) -> (u64, u64) {
    let f = &slot["guestDisks"][fs];
    match (f["usedBytes"].as_u64(), f["totalBytes"].as_u64()) {
        (Some(u), Some(t)) => (u, t),
        _ => panic!("status shows no {fs} use from the guest: {slot}"),
    }
}

/// Runs `script` with `sh -c` in the running `dom`, as `user`, through its
/// guest agent (`virsh qemu-agent-command`): exit code and stdout.
fn guest_sh(dom: &str, user: &str, script: &str) -> (i64, String) {
    use base64::Engine as _;
    let cmd = json!({
        "execute": "guest-exec",
        "arguments": {
            "path": "/usr/sbin/runuser",
            "arg": ["-u", user, "--", "/bin/sh", "-c", script],
            "capture-output": true,
        },
    });
    let started: Value =
        serde_json::from_str(&must(&["qemu-agent-command", dom, &cmd.to_string()])).unwrap();
    let pid = started["return"]["pid"]
        .as_i64()
        .expect("guest-exec gave a pid");
    let since = Instant::now();
    loop {
        let status = json!({ "execute": "guest-exec-status", "arguments": { "pid": pid } });
        let r: Value =
            serde_json::from_str(&must(&["qemu-agent-command", dom, &status.to_string()])).unwrap();
        let r = &r["return"];
        if r["exited"] == true {
            let text = |field: &str| {
                let bytes = r[field]
                    .as_str()
                    .map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
                    .unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            };
            let (out, err) = (text("out-data"), text("err-data"));
            let code = r["exitcode"].as_i64().unwrap_or(-1);
            assert!(code == 0, "{dom}: `{script}` exited {code}:\n{out}{err}");
            return (code, out);
        }
        assert!(
            since.elapsed() < JOB_TIMEOUT,
            "{dom}: `{script}` still runs after {JOB_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A job's BuildKit `type=local` export as the OCI image-layout spec has
/// it (oci-layout, index.json, blobs/sha256/<digest>): one image (manifest,
/// config, a 1 MiB layer) that index.json reaches, and 3 × 80 MiB of blobs
/// of earlier exports that nothing reaches any more, all of them exported
/// two hours ago. Prints the reachable digests, then the cache's use (%).
const WRITE_LAYOUT: &str = r#"set -eu
. /etc/hangar/guest.env
l=$HANGAR_CACHE_DIR/buildx/e2e
b=$l/blobs/sha256
mkdir -p "$b"
blob() { h=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$b/$h"; echo "$h"; }
head -c 1048576 /dev/urandom > "$l/t"; layer=$(blob "$l/t")
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer" > "$l/t"
config=$(blob "$l/t")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":1048576}]}'   "$config" "$(stat -c %s "$b/$config")" "$layer" > "$l/t"
manifest=$(blob "$l/t")
printf '{"imageLayoutVersion":"1.0.0"}' > "$l/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}'   "$manifest" "$(stat -c %s "$b/$manifest")" > "$l/index.json"
for i in 1 2 3; do head -c 83886080 /dev/urandom > "$l/t"; blob "$l/t" >/dev/null; done
touch -d '2 hours ago' "$b"/* "$l/index.json" "$l/oci-layout"
sync
echo "reachable $manifest $config $layer"
echo "use $(df --output=pcent "$HANGAR_CACHE_DIR" | tail -n 1 | tr -dc 0-9)"
"#;

/// The layout as the guest sees it: every blob's name and content digest,
/// whether oci-layout and index.json are there, and the cache's use (%).
const READ_LAYOUT: &str = r#"set -eu
. /etc/hangar/guest.env
l=$HANGAR_CACHE_DIR/buildx/e2e
cd "$l/blobs/sha256"
for f in *; do echo "blob $f $(sha256sum "$f" | cut -d' ' -f1)"; done
grep -q imageLayoutVersion "$l/oci-layout" && echo "oci-layout ok"
grep -o 'sha256:[0-9a-f]*' "$l/index.json" | sed 's/^/index /'
echo "use $(df --output=pcent "$HANGAR_CACHE_DIR" | tail -n 1 | tr -dc 0-9)"
"#;

/// The number after `key ` on its line of `out`.
fn use_percent(out: &str) -> u64 {
    line_after(out, "use ")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no use in:\n{out}"))
}

/// `hangar status -o json`, parsed, and all it printed.
fn status_json(env: &[(&str, &str)], fleet_arg: &str) -> (Value, String) {
    let (status, out) = hangar(env, &["status", "-f", fleet_arg, "-o", "json"]);
    assert!(status.success(), "hangar status failed:\n{out}");
    let start = out.find('{').expect("status printed JSON");
    // stdout (the JSON) comes first in `out`, any log lines after it.
    let view: Value = serde_json::Deserializer::from_str(&out[start..])
        .into_iter::<Value>()
        .next()
        .expect("status printed JSON")
        .unwrap_or_else(|e| panic!("status JSON: {e}:\n{out}"));
    (view, out)
}

fn slot_row<'a>(view: &'a Value, slot: &str, out: &str) -> &'a Value {
    view["slots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["slot"].as_str() == Some(slot))
        .unwrap_or_else(|| panic!("status lists no {slot}:\n{out}"))
}

/// The MAC of the test's ssh NIC (libvirt's and qemu's prefix, as hangar's
/// VMs' NICs have) and the address qemu's user network gives a guest.
const SSH_NIC_MAC: &str = "52:54:00:e2:e5:22";
const SSH_NIC_ADDRESS: &str = "10.0.2.15";

/// Hot-plugs into the running `dom` a NIC on qemu's user network that
/// reaches nothing (`restrict=on`) but for a forward of 127.0.0.1:`port`
/// to the guest's port 22.
fn ssh_nic(dom: &str, port: u16) {
    for cmd in [
        format!("netdev_add user,id=e2essh,restrict=on,hostfwd=tcp:127.0.0.1:{port}-{SSH_NIC_ADDRESS}:22"),
        // The last slot of the PCI bus: libvirt places the disks the test
        // hot-plugs from the lowest free one up, not knowing of this NIC.
        format!(
            "device_add virtio-net-pci,netdev=e2essh,id=e2essh0,mac={SSH_NIC_MAC},bus=pci.0,addr=0x1f"
        ),
    ] {
        // The monitor answers errors as text, with success.
        let said = must(&["qemu-monitor-command", dom, "--hmp", &cmd]);
        assert!(said.trim().is_empty(), "{dom}: `{cmd}`: {said}");
    }
}

/// Brings the hot-plugged NIC up with qemu's user-network address (the
/// guest's network config knows no NIC it did not boot with) and prints
/// the guest's ed25519 host key, once sshd runs.
fn configure_ssh_nic() -> String {
    format!(
        r#"set -eu
dev=
for i in $(seq 1 120); do
  for d in /sys/class/net/*; do
    [ "$(cat "$d/address")" = {SSH_NIC_MAC} ] && dev=${{d##*/}}
  done
  [ -n "$dev" ] && break
  sleep 0.5
done
[ -n "$dev" ] || {{ echo "no NIC {SSH_NIC_MAC}"; exit 1; }}
ip link set "$dev" up
ip addr add {SSH_NIC_ADDRESS}/24 dev "$dev"
for i in $(seq 1 120); do systemctl is-active --quiet ssh.service && break; sleep 0.5; done
systemctl is-active ssh.service
echo "hostkey $(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)"
"#
    )
}

/// `ssh -p PORT -i KEY github@127.0.0.1 COMMAND`, the host key checked
/// against `known_hosts`; retried while sshd is not up yet. Its stdout.
fn ssh_in(key: &Path, known_hosts: &Path, port: u16, command: &str) -> String {
    let since = Instant::now();
    loop {
        let out = Command::new("ssh")
            .args(["-F", "/dev/null", "-p", &port.to_string(), "-i"])
            .arg(key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "ConnectTimeout=30", "github@127.0.0.1", command])
            .stdin(Stdio::null())
            .output()
            .expect("ssh runs (openssh-client)");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            since.elapsed() < JOB_TIMEOUT,
            "ssh -p {port} github@127.0.0.1 failed for {JOB_TIMEOUT:?}: {}\n{err}",
            out.status
        );
        eprintln!("ssh not yet: {}", err.trim());
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// What every guest must have printed by the time its runner started.
fn assert_provisioned(log: &str, slot: &str, labels: &str) {
    let show = || format!("console of {slot}:\n{}", tail(log, 80));
    assert!(
        !log.contains("hangar: failed"),
        "a stage failed; {}",
        show()
    );
    for marker in [
        "hangar: user ok".to_string(),
        "hangar: docker ok".to_string(),
        format!("hangar: cache mounted {CACHE_BYTES}"),
        format!("hangar: runner started {slot} {labels}"),
    ] {
        assert!(log.contains(&marker), "no `{marker}`; {}", show());
    }
}

/// The stand-in runner's account of its user: `github`, in group `docker`,
/// and the Docker daemon answering that user.
fn assert_user_and_docker(line: &str, slot: &str) {
    assert!(
        line.contains("as github in groups "),
        "{slot}: the runner does not run as github: {line}"
    );
    let groups = line
        .split("in groups ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("");
    assert!(
        groups.split(',').any(|g| g == "docker"),
        "{slot}: github is not in group docker: {line}"
    );
    assert!(
        line.contains("docker server ") && !line.contains("docker server unreachable"),
        "{slot}: docker does not answer the runner's user: {line}"
    );
}

#[test]
fn apply_boots_ephemeral_and_persistent_runners_replaces_the_spent_one_and_destroys_all() {
    if !e2e_image::required("the end-to-end proof") {
        return;
    }
    virsh(&["version"]).expect("libvirtd answers at qemu:///system (.ci/start-libvirtd)");
    let mut t = Timeline {
        start: Instant::now(),
        phases: Vec::new(),
    };

    let since = Instant::now();
    let base = build_image();
    t.phase("base image ready", since);

    let pid = std::process::id();
    let fleet = format!("e2e-apply-{pid}");
    let eph = format!("{fleet}-eph-0");
    let per = format!("{fleet}-per-0");
    let labels = format!("{LABEL},hangar-{fleet}");
    let dir = tempfile::Builder::new()
        .prefix("hangar-e2e-apply-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let state_dir = dir.path().join("state");
    let pool_dir = dir.path().join("pool");
    std::fs::create_dir(&pool_dir).unwrap();
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));

    let mut guard = Guard {
        fleet: fleet.clone(),
        pool: None,
        children: Vec::new(),
    };
    let pool = fleet.clone();
    must(&[
        "pool-create-as",
        &pool,
        "dir",
        "--target",
        pool_dir.to_str().unwrap(),
    ]);
    guard.pool = Some(pool.clone());

    // GitHub: the simulator as a child process on a free loopback port.
    let token = run_token();
    let (sim_child, sim) = start_sim(dir.path(), &token, SCOPE);
    guard.children.push(("github-sim", sim_child));
    let port = sim.port;
    t.at(&format!("github-sim on http://127.0.0.1:{port}"));

    // The persistent pool lets this key log in (see the ssh step).
    let ssh_key = dir.path().join("id_ed25519");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "hangar-e2e", "-f"])
        .arg(&ssh_key)
        .status()
        .expect("ssh-keygen runs (openssh-client)");
    assert!(keygen.success(), "ssh-keygen failed");
    let ssh_public = std::fs::read_to_string(ssh_key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();

    let fleet_file = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet_file,
        fleet_yaml(&fleet, port, &pool, &base, "1536MiB", &ssh_public),
    )
    .unwrap();
    let fleet_arg = fleet_file.to_str().unwrap().to_string();
    let state_arg = state_dir.to_str().unwrap().to_string();
    let env = [
        ("HANGAR_STATE_DIR", state_arg.as_str()),
        (TOKEN_ENV, token.as_str()),
    ];
    let (status, out) = hangar(&env, &["validate", "-f", &fleet_arg]);
    assert!(status.success(), "the fleet file is refused:\n{out}");

    // 1. apply, playing GitHub's part while it waits for the runners.
    let apply_log = dir.path().join("apply.log");
    let since = Instant::now();
    let apply_child = Command::new(HANGAR)
        .args(["-v", "apply", "-f", &fleet_arg, "--wait", APPLY_WAIT])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log_file(&apply_log))
        .stderr(log_file(&apply_log))
        .spawn()
        .expect("hangar apply starts");
    guard.children.push(("hangar apply", apply_child));
    t.at("hangar apply started");

    let eph_log = console_path(&eph, 1);
    let per_log = console_path(&per, 1);
    let watched = [
        "hangar: user ok",
        "hangar: cache mounted",
        "hangar: docker ok",
        "hangar-e2e-runner: config.sh",
        "hangar: runner started",
        "hangar-e2e-runner: run.sh",
    ];
    let mut seen: BTreeMap<(String, &str), Duration> = BTreeMap::new();
    let mut per_registered: Option<u64> = None;
    let mut per_online = false;
    let mut eph_online: Option<u64> = None;
    let apply_status = loop {
        for (slot, path) in [(&eph, &eph_log), (&per, &per_log)] {
            let log = read_log(path);
            for m in watched {
                if log.contains(m) && !seen.contains_key(&(slot.clone(), m)) {
                    seen.insert((slot.clone(), m), since.elapsed());
                    t.at(&format!("{slot}: {m}"));
                }
            }
            assert!(
                !log.contains("hangar: failed"),
                "{slot}: a stage failed:\n{}",
                tail(&log, 80)
            );
        }

        // The persistent guest's config.sh would register at GitHub: do it
        // with the token it was given (the simulator knows which one).
        if per_registered.is_none() {
            let log = read_log(&per_log);
            if let Some(line) = line_after(&log, "hangar-e2e-runner: config.sh") {
                let args = parse_args(line);
                let hash = args
                    .get("token")
                    .cloned()
                    .flatten()
                    .and_then(|h| h.strip_prefix("sha256:").map(str::to_string))
                    .unwrap_or_else(|| panic!("config.sh got no hashed --token: {line}"));
                let token = sim
                    .registration_tokens()
                    .into_iter()
                    .find(|t| sha256_hex(t) == hash)
                    .unwrap_or_else(|| {
                        panic!("config.sh's --token is no registration token the simulator issued: {line}")
                    });
                let arg = |k: &str| args.get(k).cloned().flatten().unwrap_or_default();
                let r = sim.ok(
                    "POST",
                    "/_sim/runners",
                    Some(json!({
                        "scope": SCOPE,
                        "name": arg("name"),
                        "labels": arg("labels").split(',').collect::<Vec<_>>(),
                        "token": token,
                        "group": arg("runnergroup"),
                        "replace": args.contains_key("replace"),
                        "ephemeral": args.contains_key("ephemeral"),
                    })),
                );
                let id = r["id"].as_u64().expect("the registration has an id");
                assert_eq!(r["status"], "offline");
                per_registered = Some(id);
                t.at(&format!(
                    "{per}: registered as config.sh would, runner {id}"
                ));
            }
        }
        // ... and goes online when run.sh starts listening.
        if let (Some(id), false) = (per_registered, per_online) {
            if read_log(&per_log).contains("hangar-e2e-runner: run.sh listening ") {
                sim.ok("POST", &format!("/_sim/runners/{id}/online"), None);
                per_online = true;
                t.at(&format!("{per}: runner {id} online"));
            }
        }
        // The JIT runner comes online when run.sh starts with its config.
        if eph_online.is_none() {
            let log = read_log(&eph_log);
            if let Some(hash) = line_after(&log, "hangar-e2e-runner: run.sh --jitconfig sha256:") {
                let r = sim
                    .runner(&eph)
                    .unwrap_or_else(|| panic!("no JIT registration named {eph} in the simulator"));
                assert_eq!(
                    r["jit_config_sha256"].as_str(),
                    Some(hash),
                    "{eph}: run.sh got a JIT config the simulator did not issue for it"
                );
                let id = r["id"].as_u64().unwrap();
                sim.ok("POST", &format!("/_sim/runners/{id}/online"), None);
                eph_online = Some(id);
                t.at(&format!("{eph}: JIT runner {id} online"));
            }
        }

        let child = &mut guard.children[1].1;
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            since.elapsed() < APPLY_TIMEOUT,
            "hangar apply did not finish in {APPLY_TIMEOUT:?}:\n{}\n--- {eph}:\n{}\n--- {per}:\n{}",
            tail(&read_log(&apply_log), 40),
            tail(&read_log(&eph_log), 40),
            tail(&read_log(&per_log), 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let apply_out = read_log(&apply_log);
    assert!(
        apply_status.success(),
        "hangar apply failed ({apply_status}):\n{}\n--- {eph}:\n{}\n--- {per}:\n{}",
        tail(&apply_out, 60),
        tail(&read_log(&eph_log), 40),
        tail(&read_log(&per_log), 40)
    );
    assert!(
        apply_out.contains("converged after"),
        "apply did not say it converged:\n{apply_out}"
    );
    t.phase("hangar apply converged (both first boots)", since);
    let per_id = per_registered.expect("the persistent runner registered during apply");
    assert!(
        per_online,
        "the persistent runner never listened during apply"
    );
    let eph_id = eph_online.expect("the JIT runner came online during apply");

    // What the guests printed while apply waited.
    let eph_console = read_log(&eph_log);
    let per_console = read_log(&per_log);
    let _ = std::fs::write(keep.join("e2e-apply-per-g1.console.log"), &per_console);
    assert_provisioned(&eph_console, &eph, &labels);
    assert_provisioned(&per_console, &per, &labels);

    // The JIT config: the one the simulator minted for this runner, given
    // to the guest (seen by provisioning) and to run.sh; and the labels.
    let r = sim.runner(&eph).expect("the JIT runner is registered");
    let jit_hash = r["jit_config_sha256"].as_str().unwrap().to_string();
    assert!(
        eph_console.contains(&format!("hangar: jitconfig sha256 {jit_hash}")),
        "{eph}: the guest's JIT config is not the one the simulator issued:\n{}",
        tail(&eph_console, 60)
    );
    assert!(eph_console.contains(&format!("{RUNNER}run.sh --jitconfig sha256:{jit_hash}")));
    let custom = |r: &Value| -> Vec<String> {
        r["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["type"] == "custom")
            .filter_map(|l| l["name"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(custom(&r), [LABEL.to_string(), format!("hangar-{fleet}")]);
    assert_eq!(r["status"], "online");
    assert!(
        eph_console.contains(&format!(
            "{RUNNER}instance {eph}-1 finds on the cache: nothing"
        )),
        "{eph}: a fresh cache disk is not empty:\n{}",
        tail(&eph_console, 60)
    );

    // config.sh: URL (the simulator's web base and the repository), name,
    // labels, group, work folder, flags; never the token itself.
    let line = line_after(&per_console, "hangar-e2e-runner: config.sh").unwrap();
    let args = parse_args(line);
    let arg = |k: &str| args.get(k).cloned().flatten();
    assert_eq!(
        arg("url").as_deref(),
        Some(format!("http://127.0.0.1:{port}/{REPOSITORY}").as_str()),
        "config.sh --url: {line}"
    );
    assert_eq!(arg("name").as_deref(), Some(per.as_str()), "{line}");
    assert_eq!(arg("labels").as_deref(), Some(labels.as_str()), "{line}");
    assert_eq!(arg("runnergroup").as_deref(), Some("Default"), "{line}");
    assert_eq!(arg("work").as_deref(), Some("_work"), "{line}");
    for flag in ["unattended", "replace", "disableupdate"] {
        assert!(
            args.contains_key(flag),
            "config.sh without --{flag}: {line}"
        );
    }
    assert!(!args.contains_key("ephemeral"), "{line}");
    let listening = line_after(&per_console, "hangar-e2e-runner: run.sh listening ")
        .unwrap_or_else(|| panic!("{per}: run.sh did not start:\n{}", tail(&per_console, 60)));
    assert_user_and_docker(listening, &per);
    for issued in sim.registration_tokens() {
        for (slot, log) in [(&eph, &eph_console), (&per, &per_console)] {
            assert!(
                !log.contains(&issued),
                "{slot}: a registration token reached the console"
            );
        }
    }
    let r = sim
        .runner(&per)
        .expect("the persistent runner is registered");
    assert_eq!(r["id"].as_u64(), Some(per_id));
    assert_eq!(r["status"], "online");
    assert_eq!(custom(&r), [LABEL.to_string(), format!("hangar-{fleet}")]);

    // Secrets travel only in the seed, and the seeds go once runners are up.
    let vols = volumes(&pool);
    assert!(
        !vols.iter().any(|v| v.ends_with("-seed.iso")),
        "seed volumes left after the runners came up: {vols:?}"
    );
    for v in [
        format!("{eph}-g1-root.qcow2"),
        format!("{eph}-cache.qcow2"),
        format!("{per}-g1-root.qcow2"),
        format!("{per}-cache.qcow2"),
    ] {
        assert!(vols.contains(&v), "no volume {v}: {vols:?}");
    }

    // Both guests' agents answer: status shows their file systems as they
    // count them (the host's allocation would say "(host)").
    let since = Instant::now();
    let (view, out) = status_json(&env, &fleet_arg);
    t.phase("hangar status (guest agents)", since);
    for slot in [&eph, &per] {
        let s = slot_row(&view, slot, &out);
        let (root_used, root_total) = guest_fs(s, "root");
        assert!(
            root_used > 0 && root_used < root_total && root_total > 1 << 30,
            "{slot}: root use {root_used} of {root_total}"
        );
        let (cache_used, cache_total) = guest_fs(s, "cache");
        assert!(
            cache_total > CACHE_BYTES / 2 && cache_total <= CACHE_BYTES && cache_used < cache_total,
            "{slot}: cache use {cache_used} of {cache_total}"
        );
        t.at(&format!(
            "{slot}: guest agent: root {root_used} / {root_total}, cache {cache_used} / {cache_total}"
        ));
        // No NIC (`network: none`): no address; Docker's docker0 in the
        // guest is not the VM's.
        assert!(
            s.get("addresses").is_none(),
            "{slot}: an address without a network: {s}"
        );
    }

    // ssh into the persistent guest with the pool's key. Tests talk to
    // loopback only, so the guest gets a NIC on qemu's user network with
    // `restrict=on` (no packet leaves it but the forward) and a forward
    // from 127.0.0.1 to its port 22, hot-plugged through the qemu monitor:
    // libvirt 9.0's `<interface type='user'>` forwards ports only with the
    // passt backend, which does not confine the guest.
    let since = Instant::now();
    let ssh_port = free_port();
    ssh_nic(&per, ssh_port);
    let (_, host_key) = guest_sh(&per, "root", &configure_ssh_nic());
    let host_key = line_after(&host_key, "hostkey ")
        .unwrap_or_else(|| panic!("{per}: no host key:\n{host_key}"))
        .trim()
        .to_string();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{ssh_port} {host_key}\n")).unwrap();
    let login = ssh_in(&ssh_key, &known_hosts, ssh_port, "id -un");
    assert_eq!(login.trim(), "github", "{per}: ssh logged in as {login}");
    t.phase(
        &format!("{per}: ssh -p {ssh_port} github@127.0.0.1 with the pool's key"),
        since,
    );
    // The NIC reaches nothing else: not even the host's loopback, where
    // the simulator listens (qemu's user network maps 10.0.2.2 to it),
    // while the same probe reaches the guest's own sshd on that NIC.
    let probe = |addr: &str, port: u16| {
        format!(
            "if timeout 10 bash -c '</dev/tcp/{addr}/{port}' 2>/dev/null; \
             then echo reached; else echo confined; fi; "
        )
    };
    let (_, reach) = guest_sh(
        &per,
        "github",
        &format!("{}{}", probe(SSH_NIC_ADDRESS, 22), probe("10.0.2.2", port)),
    );
    assert_eq!(
        reach.split_whitespace().collect::<Vec<_>>(),
        ["reached", "confined"],
        "{per}: the probe of its own sshd, then of the host through the ssh NIC"
    );
    // The guest's agent now reports the NIC's address, and status shows it.
    let (view, out) = status_json(&env, &fleet_arg);
    let addresses = slot_row(&view, &per, &out)["addresses"].clone();
    assert_eq!(
        addresses.get(0).and_then(Value::as_str),
        Some(SSH_NIC_ADDRESS),
        "{per}: status shows not the guest's address (IPv4 first): {addresses}\n{out}"
    );
    let (_, table) = hangar(&env, &["status", "-f", &fleet_arg]);
    assert!(
        table
            .lines()
            .any(|l| l.contains(per.as_str()) && l.contains(SSH_NIC_ADDRESS)),
        "the status table shows no address for {per}:\n{table}"
    );

    // The persistent runner gets a job, and the next one is queued behind
    // it; the job lasts until the test says it is done.
    let since = Instant::now();
    let r = sim.ok("POST", &format!("/_sim/runners/{per_id}/job/start"), None);
    assert_eq!(r["busy"], true);
    hotplug(dir.path(), &per, "vdx", "e2e-job-p1");
    wait_for_console(
        &per_log,
        &per,
        &[
            "hangar: job started",
            "hangar-e2e-runner: job e2e-job-p1 running ",
        ],
        JOB_TIMEOUT,
    );
    hotplug(dir.path(), &per, "vdy", "e2e-job-p2");
    t.phase(&format!("{per}: job p1 running, job p2 queued"), since);

    // 2. GitHub assigns the ephemeral runner a job; the job reaches the
    // guest as a hot-plugged disk; the runner exits; the guest powers off.
    let since = Instant::now();
    let r = sim.ok("POST", &format!("/_sim/runners/{eph_id}/job/start"), None);
    assert_eq!(r["busy"], true);
    let job = format!("e2e-job-{eph_id}");
    hotplug(dir.path(), &eph, "vdz", &job);
    t.at(&format!("{eph}: job {job} assigned (disk hot-plugged)"));
    let finished = format!("{RUNNER}run.sh exits 0");
    loop {
        let log = read_log(&eph_log);
        if log.contains("hangar: job finished") && log.contains(&finished) {
            break;
        }
        assert!(
            since.elapsed() < JOB_TIMEOUT,
            "{eph}: the job did not finish in {JOB_TIMEOUT:?}:\n{}",
            tail(&log, 60)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    t.phase("ephemeral job ran", since);
    let r = sim.ok("POST", &format!("/_sim/runners/{eph_id}/job/finish"), None);
    assert_eq!(
        r["removed"], true,
        "GitHub keeps an ephemeral runner after its job"
    );
    let since = Instant::now();
    loop {
        let state = must(&["domstate", &eph]);
        if state == "shut off" {
            break;
        }
        assert!(
            since.elapsed() < POWEROFF_TIMEOUT,
            "{eph}: still {state} {POWEROFF_TIMEOUT:?} after its job:\n{}",
            tail(&read_log(&eph_log), 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    t.phase("ephemeral guest powered off, domain shut off", since);
    // hangar deletes a generation's console log with the generation.
    let eph_g1 = read_log(&eph_log);
    let _ = std::fs::write(keep.join("e2e-apply-eph-g1.console.log"), &eph_g1);
    let show = || format!("console of {eph} g1:\n{}", tail(&eph_g1, 80));
    assert!(eph_g1.contains(&format!("{RUNNER}got {job}")), "{}", show());
    assert!(eph_g1.contains("hangar: job started"), "{}", show());
    let ran = line_after(&eph_g1, "hangar-e2e-runner: job ran ")
        .unwrap_or_else(|| panic!("the job did not run; {}", show()));
    assert_user_and_docker(ran, &eph);
    let written = format!("{job} of instance {eph}-1");
    assert!(
        eph_g1.contains(&format!("{RUNNER}job wrote to the cache: {written}")),
        "{}",
        show()
    );
    assert!(!eph_g1.contains("hangar: failed"), "{}", show());

    // 3. The persistent pool's spec changes. The next pass replaces the
    // spent VM with generation 2, which finds on the same cache disk what
    // generation 1 wrote, and drains the busy persistent runner.
    std::fs::write(
        &fleet_file,
        fleet_yaml(&fleet, port, &pool, &base, "1600MiB", &ssh_public),
    )
    .unwrap();
    let since = Instant::now();
    let (status, out) = hangar(&env, &["reconcile", "-f", &fleet_arg, "--once"]);
    assert!(status.success(), "hangar reconcile --once failed:\n{out}");
    t.phase("hangar reconcile --once (replace eph, drain per)", since);
    assert!(
        out.lines().any(|l| l.contains("drain") && l.contains(&per)),
        "the pass did not drain {per}:\n{out}"
    );
    let per_drain = wait_for_console(&per_log, &per, &["hangar: drain requested"], JOB_TIMEOUT);
    assert!(
        !per_drain.contains("hangar: job finished")
            && !per_drain.contains("hangar-e2e-runner: job e2e-job-p1 done"),
        "{per}: the drain cut the running job:\n{}",
        tail(&per_drain, 40)
    );
    assert_eq!(must(&["domstate", &eph]), "running", "{out}");
    assert_eq!(must(&["domstate", &per]), "running", "{out}");
    let vols = volumes(&pool);
    assert!(
        vols.contains(&format!("{eph}-g2-root.qcow2")),
        "{vols:?}\n{out}"
    );
    assert!(!vols.contains(&format!("{eph}-g1-root.qcow2")), "{vols:?}");
    assert!(vols.contains(&format!("{eph}-cache.qcow2")), "{vols:?}");
    assert!(vols.contains(&format!("{per}-g1-root.qcow2")), "{vols:?}");

    // The drained runner's job ends on its own; no other job starts; the
    // runner stops; the next pass replaces the VM (its boot overlaps the
    // ephemeral generation 2's).
    let since = Instant::now();
    hotplug(dir.path(), &per, "vdw", "e2e-done-p1");
    let drained = wait_for_console(&per_log, &per, &["hangar: drained"], JOB_TIMEOUT);
    sim.ok("POST", &format!("/_sim/runners/{per_id}/job/finish"), None);
    t.phase(&format!("{per}: job p1 ended, runner drained"), since);
    let at = |needle: &str| {
        drained
            .find(needle)
            .unwrap_or_else(|| panic!("{per}: no `{needle}`:\n{}", tail(&drained, 40)))
    };
    assert!(
        at("hangar: drain requested") < at("hangar-e2e-runner: job e2e-job-p1 done")
            && at("hangar-e2e-runner: job e2e-job-p1 done") < at("hangar: job finished")
            && at("hangar: job finished") < at("hangar: drained"),
        "{per}: drain, job end and stop out of order:\n{}",
        tail(&drained, 40)
    );
    // Longer than the stand-in listener's pause between jobs.
    std::thread::sleep(Duration::from_secs(10));
    let per_g1 = read_log(&per_log);
    let _ = std::fs::write(keep.join("e2e-apply-per-g1.console.log"), &per_g1);
    assert!(
        !per_g1.contains("got e2e-job-p2") && !per_g1.contains("hangar: failed"),
        "{per}: the drained runner took the queued job or failed:\n{}",
        tail(&per_g1, 40)
    );
    let since = Instant::now();
    let (status, out) = hangar(&env, &["reconcile", "-f", &fleet_arg, "--once"]);
    assert!(status.success(), "hangar reconcile --once failed:\n{out}");
    t.phase("hangar reconcile --once (replace the drained per)", since);
    let vols = volumes(&pool);
    assert!(
        vols.contains(&format!("{per}-g2-root.qcow2"))
            && !vols.contains(&format!("{per}-g1-root.qcow2"))
            && vols.contains(&format!("{per}-cache.qcow2")),
        "{per} was not replaced: {vols:?}\n{out}"
    );
    assert_eq!(must(&["domstate", &per]), "running", "{out}");
    // Generation 1's console log is a leftover now, which the next plan
    // removes as an action of its own (destroy below leaves none).
    let (_, diff) = hangar(&env, &["diff", "-f", &fleet_arg]);
    let log_name = eph_log.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        !eph_log.exists() || diff.contains(&format!("- remove  console log {log_name}")),
        "generation 1's console log outlived its VM and no plan removes it:\n{diff}"
    );
    let r2 = sim
        .runner(&eph)
        .expect("generation 2 has a fresh JIT registration");
    assert_ne!(r2["id"].as_u64(), Some(eph_id));
    let jit2 = r2["jit_config_sha256"].as_str().unwrap().to_string();
    assert_ne!(jit2, jit_hash, "a JIT config was reused");

    let eph_log2 = console_path(&eph, 2);
    let found = format!("{RUNNER}instance {eph}-2 finds on the cache: {written}");
    let since = Instant::now();
    let mut progress = Progress::new(REBOOT_IDLE, REBOOT_CAP);
    let eph_g2 = loop {
        let log = read_log(&eph_log2);
        if log.contains(&found) {
            break log;
        }
        assert!(
            !log.contains("hangar: failed") && !progress.stalled(&log),
            "{eph} g2 did not find generation 1's file ({}):\n{}",
            progress.why(),
            tail(&log, 60)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    t.phase("generation 2 booted and found generation 1's file", since);
    let _ = std::fs::write(keep.join("e2e-apply-eph-g2.console.log"), &eph_g2);
    assert_provisioned(&eph_g2, &eph, &labels);
    assert!(
        eph_g2.contains(&format!("{RUNNER}run.sh --jitconfig sha256:{jit2}")),
        "generation 2 did not get its own JIT config:\n{}",
        tail(&eph_g2, 40)
    );

    // The persistent generation 2 boots with the new spec and configures
    // its runner.
    let since = Instant::now();
    let per_log2 = console_path(&per, 2);
    let mut progress = Progress::new(REBOOT_IDLE, REBOOT_CAP);
    loop {
        let log = read_log(&per_log2);
        if log.contains("hangar-e2e-runner: config.sh") {
            break;
        }
        assert!(
            !log.contains("hangar: failed") && !progress.stalled(&log),
            "{per} g2 did not configure its runner ({}):\n{}",
            progress.why(),
            tail(&log, 60)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    t.phase("persistent generation 2 booted", since);

    // Prune on demand: a job leaves an over-budget cache (a valid OCI
    // layout with stale blobs); `hangar cache prune` has the guest prune it
    // now, through its agent; the layout stays valid, every referenced blob
    // stays, and the cache is back within budget.
    let since = Instant::now();
    let (_, wrote) = guest_sh(&eph, "github", WRITE_LAYOUT);
    let reachable: Vec<String> = line_after(&wrote, "reachable ")
        .unwrap_or_else(|| panic!("{eph}: the layout was not written:\n{wrote}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(reachable.len(), 3, "{wrote}");
    let before = use_percent(&wrote);
    assert!(
        before > PRUNE_ABOVE,
        "{eph}: the cache is not over budget: {wrote}"
    );
    t.phase(
        &format!("{eph}: a job wrote an OCI layout, cache at {before}%"),
        since,
    );
    let since = Instant::now();
    let (status, out) = hangar(&env, &["cache", "prune", &eph, "-f", &fleet_arg]);
    assert!(status.success(), "hangar cache prune failed:\n{out}");
    t.phase("hangar cache prune (on demand)", since);
    assert!(
        out.contains("hangar-prune: ")
            && out.contains("buildx/e2e: removed 3 blobs its index.json no longer reaches")
            && out.contains(&format!(
                "pruned the cache of {eph} (generation 2) on host local"
            )),
        "the prune did not say what it did:\n{out}"
    );
    let (_, layout) = guest_sh(&eph, "github", READ_LAYOUT);
    let mut blobs: Vec<String> = Vec::new();
    for line in layout.lines().filter_map(|l| l.strip_prefix("blob ")) {
        let (name, digest) = line.split_once(' ').unwrap();
        assert_eq!(name, digest, "{eph}: blob {name} does not hold its digest");
        blobs.push(name.to_string());
    }
    blobs.sort();
    let mut want = reachable.clone();
    want.sort();
    assert_eq!(
        blobs, want,
        "{eph}: not exactly the referenced blobs are left:\n{layout}"
    );
    assert!(layout.contains("oci-layout ok"), "{layout}");
    assert!(
        layout.contains(&format!("index sha256:{}", reachable[0])),
        "{eph}: index.json no longer names the manifest:\n{layout}"
    );
    let after = use_percent(&layout);
    assert!(
        after <= PRUNE_ABOVE,
        "{eph}: the cache is at {after}% after the prune"
    );
    t.at(&format!(
        "{eph}: cache from {before}% to {after}%, 3 referenced blobs kept"
    ));

    // A slot the file does not have: a usage error that names it.
    let (status, out) = hangar(
        &env,
        &[
            "cache",
            "prune",
            &format!("{fleet}-eph-9"),
            "-f",
            &fleet_arg,
        ],
    );
    assert_eq!(status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!("no slot {fleet}-eph-9 in fleet {fleet}")),
        "{out}"
    );

    // 4. destroy leaves nothing of the fleet.
    let since = Instant::now();
    let (status, out) = hangar(&env, &["destroy", "-f", &fleet_arg, "--yes"]);
    assert!(status.success(), "hangar destroy failed:\n{out}");
    t.phase("hangar destroy", since);
    let left = domains_named(&format!("{fleet}-"));
    assert!(
        left.is_empty(),
        "domains left after destroy: {left:?}\n{out}"
    );
    let vols = volumes(&pool);
    assert!(
        vols.is_empty(),
        "volumes left after destroy: {vols:?}\n{out}"
    );
    let logs: Vec<String> = std::fs::read_dir(CONSOLE_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{fleet}-")))
        .collect();
    assert!(logs.is_empty(), "console logs left after destroy: {logs:?}");
    let runners = sim.runners();
    assert!(
        runners.is_empty(),
        "registrations left after destroy: {runners:?}"
    );

    drop(guard);
    assert!(
        virsh(&["pool-info", &pool]).is_err(),
        "the test's storage pool is still there"
    );
    eprintln!("timings:");
    for (what, d) in &t.phases {
        eprintln!("  {:>6.1}s  {what}", d.as_secs_f64());
    }
    eprintln!("  {:>6.1}s  total", t.start.elapsed().as_secs_f64());
}
