//! The two-host end-to-end proof, through the real `hangar` binary: one
//! fleet across this machine's libvirtd (`qemu:///system`) and a remote
//! host reached the way a user reaches one, `qemu+ssh://` with a key and a
//! checked host key, to the session libvirtd of the user `hangar-remote`
//! that `.ci/start-remote-libvirtd` runs (its URI is printed). GitHub is
//! `hangar github-sim` in a child process on a loopback port.
//!
//! Pool `here` is placed on the local host, pool `there` on the remote one;
//! both boot the e2e base image for real (software emulation) and start a
//! JIT runner that waits for a job.
//!
//! 1. `apply --wait` creates a VM on each host; the test plays GitHub's
//!    part (a JIT runner comes online when `run.sh --jitconfig` starts) and
//!    apply converges. `status` shows both hosts; `diff` is in sync.
//! 2. `hangar logs` of the remote slot says on which host its log is;
//!    `hangar logs --follow` streams its live console: a line the guest
//!    prints (through its agent) arrives.
//! 3. The remote host goes away (its sshd stopped): `diff` exits 3, says
//!    the remote slot waits on its host and plans nothing for either host, `reconcile --once` changes nothing,
//!    and the remote VM keeps running.
//! 4. It comes back: `diff` is in sync again.
//! 5. `destroy --yes` leaves no domain, volume or runner of the fleet on
//!    either host.
//!
//! Runs when HANGAR_REQUIRE_LIBVIRTD=1 (`.ci/run`), skipped otherwise.
//! Needs root (the image build, qemu:///system, the remote user's files).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "kit/e2e_image.rs"]
mod e2e_image;
#[path = "kit/e2e_play.rs"]
mod e2e_play;
#[path = "kit/virsh.rs"]
mod virsh;
use e2e_image::{build_image, BaseImage};
use e2e_play::{hangar, line_after, log_file, read_log, run_token, start_sim, tail, Timeline};
use e2e_play::{Sim, HANGAR};
use virsh::{must, virsh_at, Cleanup, SYSTEM};

const URI_FILE: &str = "/var/lib/hangar-ci/remote/uri";
const REMOTE_USER: &str = "hangar-remote";
const REMOTE_HOME: &str = "/var/lib/hangar-remote";
/// The remote user's storage pool and console directory
/// (`.ci/start-remote-libvirtd`).
const REMOTE_POOL: &str = "hangar-ci";
const REMOTE_CONSOLES: &str = "/var/lib/hangar-remote/consoles";
const LOCAL_CONSOLES: &str = "/var/log/hangar";
const REPOSITORY: &str = "e2e/remote";
const SCOPE: &str = "repos/e2e/remote";
const TOKEN_ENV: &str = "HANGAR_E2E_GITHUB_TOKEN";
/// The stand-in JIT runner waits for a job instead of running one at once.
const JOBS_BY_HOTPLUG: &str = "hangar_e2e.jobs=hotplug";
const APPLY_WAIT: &str = "12m";
const APPLY_TIMEOUT: Duration = Duration::from_secs(780);
/// How long `logs --follow` may take to show a line the guest printed.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(120);

fn remote_uri() -> String {
    let uri = std::fs::read_to_string(URI_FILE)
        .unwrap_or_else(|e| panic!("{URI_FILE}: {e} (run .ci/start-remote-libvirtd)"))
        .trim()
        .to_string();
    virsh_at(&uri, &["version"]).unwrap_or_else(|e| panic!("the remote host: {e}"));
    uri
}

fn start_remote() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/start-remote-libvirtd");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .expect("run .ci/start-remote-libvirtd");
    assert!(
        out.status.success(),
        ".ci/start-remote-libvirtd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stop_remote_sshd() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/start-remote-libvirtd");
    let ok = Command::new(&script)
        .arg("--stop-sshd")
        .status()
        .expect("run .ci/start-remote-libvirtd --stop-sshd")
        .success();
    assert!(ok, "the remote host's sshd did not stop");
}

/// `virsh -c qemu:///session ARGS` as the remote user, on its own socket:
/// the remote side seen without ssh, so it can be checked while the host
/// is unreachable for hangar.
fn remote_side(args: &[&str]) -> String {
    try_remote_side(args).unwrap_or_else(|e| panic!("{e}"))
}

fn try_remote_side(args: &[&str]) -> Result<String, String> {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={REMOTE_USER}"),
            &format!("--regid={REMOTE_USER}"),
            "--init-groups",
            "--",
            "env",
            "-i",
            &format!("HOME={REMOTE_HOME}"),
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "virsh",
            "-q",
            "-c",
            "qemu:///session",
        ])
        .args(args)
        .output()
        .map_err(|e| format!("virsh as {REMOTE_USER}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "virsh as {REMOTE_USER} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Running domains named `prefix…` on the remote side, seen without ssh.
fn remote_running(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = remote_side(&["list", "--state-running", "--name"])
        .split_whitespace()
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The fleet's volumes in the remote pool, over ssh.
fn remote_volumes(uri: &str, prefix: &str) -> Vec<String> {
    virsh::volumes_at(uri, REMOTE_POOL)
        .into_iter()
        .filter(|v| v.starts_with(prefix))
        .collect()
}

/// Brings the remote host back when dropped (its sshd may be stopped),
/// then removes what the test gave its user: the base image volume and the
/// boot files. Declared after the remote [`Cleanup`], so it drops first.
struct RemoteBack {
    uri: String,
    base_volume: String,
    boot_dir: PathBuf,
}

impl Drop for RemoteBack {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/start-remote-libvirtd");
        let _ = Command::new(script).stdin(Stdio::null()).status();
        virsh::remove_volumes_at(&self.uri, REMOTE_POOL, &self.base_volume);
        let _ = std::fs::remove_dir_all(&self.boot_dir);
    }
}

/// Copies `from` to `to`, owned by the remote user (its qemu reads it).
fn give_remote_user(from: &str, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from} to {}: {e}", to.display()));
    let ok = Command::new("chown")
        .arg(format!("{REMOTE_USER}:{REMOTE_USER}"))
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown {}", to.display());
}

struct Places<'a> {
    fleet: &'a str,
    port: u16,
    local_pool: &'a str,
    remote_uri: &'a str,
    base: &'a BaseImage,
    remote_base: &'a str,
    remote_boot: &'a Path,
}

fn fleet_yaml(p: &Places) -> String {
    let pool = |name: &str, host: &str, image: &str, kernel: &str, initrd: &str| {
        format!(
            "    - name: {name}
      count: 1
      ephemeral: true
      hosts: [{host}]
      labels: [e2e]
      vm:
        cpus: 1
        memory: 1536MiB
        disk: 4GiB
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
",
            image = json!(image),
            kernel = json!(kernel),
            initrd = json!(initrd),
            cmdline = json!(format!("{} {JOBS_BY_HOTPLUG}", p.base.cmdline)),
            runner_dir = json!(p.base.runner_dir),
        )
    };
    let local_images = Path::new(&p.base.image).parent().unwrap().display();
    let kernel = p.remote_boot.join("vmlinuz").display().to_string();
    let initrd = p.remote_boot.join("initrd.img").display().to_string();
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
      uri: {SYSTEM}
      storagePool: {local_pool}
      domainType: qemu
      cpuOvercommit: 16
      imageDirs: [{local_images}]
      network:
        mode: none
    - name: remote
      uri: {remote_uri}
      storagePool: {REMOTE_POOL}
      domainType: qemu
      imageDirs: [{boot}]
      consoleDir: {REMOTE_CONSOLES}
      network:
        mode: none
  pools:
{here}{there}  policy:
    bootTimeout: 15m
",
        fleet = p.fleet,
        port = p.port,
        local_pool = p.local_pool,
        remote_uri = json!(p.remote_uri),
        boot = p.remote_boot.display(),
        here = pool(
            "here",
            "local",
            &p.base.image,
            &p.base.kernel,
            &p.base.initrd
        ),
        there = pool("there", "remote", p.remote_base, &kernel, &initrd),
    )
}

/// Brings each slot's JIT runner online at the simulator once the guest's
/// `run.sh --jitconfig` started with the config the simulator minted for it.
fn play_jit_runners(sim: &Sim, slots: &[(&str, PathBuf)], online: &mut Vec<String>, t: &Timeline) {
    for (slot, log_path) in slots {
        if online.iter().any(|s| s == slot) {
            continue;
        }
        let log = read_log(log_path);
        assert!(
            !log.contains("hangar: failed"),
            "{slot}: a stage failed:\n{}",
            tail(&log, 80)
        );
        let Some(hash) = line_after(&log, "hangar-e2e-runner: run.sh --jitconfig sha256:") else {
            continue;
        };
        let r = sim
            .runner(slot)
            .unwrap_or_else(|| panic!("no JIT registration named {slot} in the simulator"));
        assert_eq!(
            r["jit_config_sha256"].as_str(),
            Some(hash),
            "{slot}: run.sh got a JIT config the simulator did not issue for it"
        );
        let id = r["id"].as_u64().unwrap();
        sim.ok("POST", &format!("/_sim/runners/{id}/online"), None);
        online.push(slot.to_string());
        t.at(&format!("{slot}: JIT runner {id} online"));
    }
}

#[test]
fn a_fleet_across_a_local_and_a_remote_host_boots_survives_the_remote_going_away_and_destroys_all()
{
    if !e2e_image::required("the two-host end-to-end proof") {
        return;
    }
    virsh::virsh(&["version"]).expect("libvirtd answers at qemu:///system");
    start_remote();
    let remote_uri = remote_uri();
    println!("remote libvirt host: {remote_uri}");
    let mut t = Timeline {
        start: Instant::now(),
        phases: Vec::new(),
    };
    let since = Instant::now();
    let base = build_image();
    t.phase("base image ready", since);

    let pid = std::process::id();
    let fleet = format!("e2e-remote-{pid}");
    let prefix = format!("{fleet}-");
    let here = format!("{fleet}-here-0");
    let there = format!("{fleet}-there-0");
    let dir = tempfile::Builder::new()
        .prefix("hangar-e2e-remote-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let pool_dir = dir.path().join("pool");
    std::fs::create_dir(&pool_dir).unwrap();

    // The local side: a pool of its own for the run.
    let local_pool = fleet.clone();
    must(&[
        "pool-create-as",
        &local_pool,
        "dir",
        "--target",
        pool_dir.to_str().unwrap(),
    ]);
    let mut _local = Cleanup::domains(&prefix);
    _local.pool = Some(local_pool.clone());
    _local.console_dir = Some(PathBuf::from(LOCAL_CONSOLES));
    // The remote side: the base image as a volume of the remote user's
    // pool (not named like the fleet's: hangar must leave it alone), the
    // kernel and initrd in a directory of that user's.
    let remote_base = format!("base-{fleet}.qcow2");
    let boot_dir = PathBuf::from(REMOTE_HOME).join(format!("boot-{fleet}"));
    let mut _remote = Cleanup::domains_at(&remote_uri, &prefix);
    _remote.shared_pool = Some(REMOTE_POOL.to_string());
    _remote.console_dir = Some(PathBuf::from(REMOTE_CONSOLES));
    let _back = RemoteBack {
        uri: remote_uri.clone(),
        base_volume: remote_base.clone(),
        boot_dir: boot_dir.clone(),
    };
    std::fs::create_dir(&boot_dir).unwrap();
    Command::new("chown")
        .arg(format!("{REMOTE_USER}:{REMOTE_USER}"))
        .arg(&boot_dir)
        .status()
        .unwrap();
    give_remote_user(&base.kernel, &boot_dir.join("vmlinuz"));
    give_remote_user(&base.initrd, &boot_dir.join("initrd.img"));
    give_remote_user(
        &base.image,
        &PathBuf::from(REMOTE_HOME).join("pool").join(&remote_base),
    );
    remote_side(&["pool-refresh", REMOTE_POOL]);
    t.at("remote host has the base image and boot files");

    let token = run_token();
    let (sim_child, sim) = start_sim(dir.path(), &token, SCOPE);
    let mut children = Children(vec![sim_child]);
    let fleet_file = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet_file,
        fleet_yaml(&Places {
            fleet: &fleet,
            port: sim.port,
            local_pool: &local_pool,
            remote_uri: &remote_uri,
            base: &base,
            remote_base: &remote_base,
            remote_boot: &boot_dir,
        }),
    )
    .unwrap();
    let f = fleet_file.to_str().unwrap().to_string();
    let state = dir.path().join("state").to_str().unwrap().to_string();
    let env = [
        ("HANGAR_STATE_DIR", state.as_str()),
        (TOKEN_ENV, token.as_str()),
    ];
    let (status, out) = hangar(&env, &["validate", "-f", &f]);
    assert!(status.success(), "the fleet file is refused:\n{out}");

    // 1. apply across both hosts.
    let apply_log = dir.path().join("apply.log");
    let since = Instant::now();
    let apply = Command::new(HANGAR)
        .args(["-v", "apply", "-f", &f, "--wait", APPLY_WAIT])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log_file(&apply_log))
        .stderr(log_file(&apply_log))
        .spawn()
        .expect("hangar apply starts");
    children.0.push(apply);
    let apply = children.0.last_mut().unwrap();
    let slots = [
        (
            here.as_str(),
            Path::new(LOCAL_CONSOLES).join(format!("{here}-g1.console.log")),
        ),
        (
            there.as_str(),
            Path::new(REMOTE_CONSOLES).join(format!("{there}-g1.console.log")),
        ),
    ];
    let mut online = Vec::new();
    let apply_status = loop {
        play_jit_runners(&sim, &slots, &mut online, &t);
        if let Some(status) = apply.try_wait().unwrap() {
            break status;
        }
        if since.elapsed() > APPLY_TIMEOUT {
            let _ = apply.kill();
            panic!(
                "hangar apply did not finish in {APPLY_TIMEOUT:?}:\n{}\n--- {here}:\n{}\n--- {there}:\n{}",
                tail(&read_log(&apply_log), 40),
                tail(&read_log(&slots[0].1), 30),
                tail(&read_log(&slots[1].1), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let apply_out = read_log(&apply_log);
    assert!(
        apply_status.success() && apply_out.contains("converged after"),
        "hangar apply did not converge ({apply_status}):\n{}\n--- {there}:\n{}",
        tail(&apply_out, 60),
        tail(&read_log(&slots[1].1), 40)
    );
    t.phase("apply converged on both hosts", since);
    assert_eq!(online.len(), 2, "both runners came online: {online:?}");
    let remote_console = read_log(&slots[1].1);
    for marker in [
        "hangar: user ok",
        "hangar: docker ok",
        "hangar: runner started",
    ] {
        assert!(
            remote_console.contains(marker),
            "the remote guest did not print `{marker}`:\n{}",
            tail(&remote_console, 60)
        );
    }
    assert_eq!(virsh::running(&prefix), vec![here.clone()]);
    assert_eq!(remote_running(&prefix), vec![there.clone()]);

    let (status, out) = hangar(&env, &["status", "-f", &f]);
    assert!(status.success(), "status:\n{out}");
    for want in ["local", "remote", here.as_str(), there.as_str()] {
        assert!(out.contains(want), "status does not show {want}:\n{out}");
    }
    // The remote guest's stage comes through its guest agent (its console
    // log is on the remote host only), on the session daemon too.
    let (status, out) = hangar(&env, &["status", "-f", &f, "-o", "json"]);
    assert!(status.success(), "status:\n{out}");
    let start = out.find('{').expect("status printed JSON");
    let view: serde_json::Value = serde_json::Deserializer::from_str(&out[start..])
        .into_iter::<serde_json::Value>()
        .next()
        .expect("status printed JSON")
        .unwrap_or_else(|e| panic!("status JSON: {e}:\n{out}"));
    let stage = |slot: &str| {
        view["slots"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["slot"].as_str() == Some(slot))
            .map(|s| s["guest"].clone())
    };
    assert_eq!(
        stage(&there),
        Some(json!("runner_started")),
        "the remote slot's stage, through its agent:\n{out}"
    );
    assert_eq!(stage(&here), Some(json!("runner_started")), "{out}");
    let (status, out) = hangar(&env, &["diff", "-f", &f]);
    assert_eq!(
        status.code(),
        Some(0),
        "diff after apply is not in sync:\n{out}"
    );

    // 2. The remote slot's log is on the remote host: logs says where.
    let (status, out) = hangar(&env, &["logs", &there, "-f", &f]);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("on host remote") && out.contains(REMOTE_CONSOLES),
        "logs of the remote slot does not say where its log is:\n{out}"
    );

    // `logs --follow` of the remote slot streams its live console over the
    // libvirt connection: a line the guest prints now arrives.
    let since = Instant::now();
    let marker = format!("hangar-e2e-follow {pid}");
    let follow_err = dir.path().join("follow.err");
    let mut follow = Command::new(HANGAR)
        .args(["logs", &there, "-f", &f, "--follow"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(&follow_err))
        .spawn()
        .expect("hangar logs --follow starts");
    let lines = follow.stdout.take().expect("its stdout is a pipe");
    children.0.push(follow);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(lines).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut followed = Vec::new();
    let mut said = Instant::now() - Duration::from_secs(60);
    let arrived = loop {
        // Said again every few seconds: the first may come before the
        // console is open.
        if read_log(&follow_err).contains("following the live console")
            && said.elapsed() > Duration::from_secs(5)
        {
            print_on_console(&there, &marker);
            said = Instant::now();
        }
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) if line.contains(&marker) => break true,
            Ok(line) => followed.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
        }
        if since.elapsed() > FOLLOW_TIMEOUT {
            break false;
        }
    };
    let follow = children.0.last_mut().unwrap();
    let ended = follow.try_wait().unwrap();
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        arrived,
        "`hangar logs {there} --follow` did not print `{marker}` within {FOLLOW_TIMEOUT:?} \
         (exited: {ended:?}); stderr:\n{}\nstdout:\n{}",
        read_log(&follow_err),
        tail(&followed.join("\n"), 30)
    );
    t.phase(
        "logs --follow of the remote slot printed the guest's line",
        since,
    );

    // 3. The remote host goes away.
    stop_remote_sshd();
    t.at("remote host's sshd stopped");
    let (status, out) = hangar(&env, &["diff", "-f", &f]);
    // A host that cannot be observed is an error of the provider (exit 3),
    // and the plan says what waits on it.
    assert_eq!(status.code(), Some(3), "diff with a host away:\n{out}");
    assert!(
        out.contains(&format!("= wait    {there} (host remote not observed"))
            && out.contains("nothing destructive is planned there"),
        "diff does not say the remote slot waits on its host:\n{out}"
    );
    // Only waits: no create, replace, delete, start, drain or removal.
    assert!(
        !out.lines()
            .any(|l| ["+ ", "~ ", "- ", "> "].iter().any(|a| l.starts_with(a))),
        "diff plans a change while a host is away:\n{out}"
    );
    let (_, out) = hangar(&env, &["reconcile", "-f", &f, "--once"]);
    assert_eq!(
        remote_running(&prefix),
        vec![there.clone()],
        "the remote VM did not survive its host going away:\n{out}"
    );
    assert_eq!(virsh::running(&prefix), vec![here.clone()], "{out}");
    let (_, out) = hangar(&env, &["status", "-f", &f]);
    assert!(out.contains(&here), "status with a host away:\n{out}");

    // 4. It comes back.
    start_remote();
    t.at("remote host's sshd back");
    let (status, out) = hangar(&env, &["diff", "-f", &f]);
    assert_eq!(status.code(), Some(0), "diff once the host is back:\n{out}");

    // 5. destroy leaves nothing of the fleet on either host.
    let (status, out) = hangar(&env, &["destroy", "-f", &f, "--yes"]);
    assert!(status.success(), "destroy:\n{out}");
    assert!(virsh::domains(&prefix).is_empty(), "local domains left");
    assert!(
        virsh::volumes(&local_pool).is_empty(),
        "local volumes left: {:?}",
        virsh::volumes(&local_pool)
    );
    assert!(
        virsh::domains_at(&remote_uri, &prefix).is_empty(),
        "remote domains left"
    );
    assert!(
        remote_volumes(&remote_uri, &prefix).is_empty(),
        "remote volumes left: {:?}",
        remote_volumes(&remote_uri, &prefix)
    );
    assert!(
        remote_volumes(&remote_uri, "base-").contains(&remote_base),
        "destroy removed the remote base image, which the fleet does not own"
    );
    assert!(
        sim.runners().is_empty(),
        "runners left: {:?}",
        sim.runners()
    );
    t.phase("destroyed on both hosts", since);
}

/// Has the remote `dom` print `line` on its serial console (through its
/// guest agent, on the remote user's own socket).
fn print_on_console(dom: &str, line: &str) {
    let cmd = json!({
        "execute": "guest-exec",
        "arguments": {
            "path": "/bin/sh",
            "arg": ["-c", format!("echo '{line}' > /dev/ttyS0")],
        },
    });
    remote_side(&["qemu-agent-command", dom, &cmd.to_string()]);
}

/// Child processes, stopped when the test ends, passed or not (before the
/// cleanups, declared earlier, remove what they made).
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
