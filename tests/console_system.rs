//! `hangar logs` and `hangar console` through the binary against a real
//! libvirtd at `qemu:///system` (started by `.ci/start-libvirtd`). The VM is
//! made by the libvirt provider from an empty base image, so it never boots
//! an OS; its firmware still prints to the serial port ("No bootable
//! device"), which is what the console log and an attached console show.
//! `virsh reset` makes the firmware print again while a test is attached.
//!
//! Without a reachable daemon the test says why and skips, unless
//! `HANGAR_REQUIRE_LIBVIRTD=1` (as in `.ci/run`). A drop guard removes the
//! run's domain, volumes, pool and console logs even when an assertion fails.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use hangar::model::host::NetworkAttachment;
use hangar::providers::libvirt::DEFAULT_CONSOLE_DIR;
use hangar::providers::Hypervisor;

#[path = "kit/host.rs"]
mod kit;
#[path = "kit/virsh.rs"]
mod virsh;
use virsh::{must, Cleanup, PrivatePool, SYSTEM as URI};

const BIN: &str = env!("CARGO_BIN_EXE_hangar");
/// What SeaBIOS prints on the serial port of a VM with no bootable disk.
const FIRMWARE_LINE: &str = "No bootable device";

struct Rig {
    _guard: Cleanup,
    _state: tempfile::TempDir,
    state: PathBuf,
    file: PathBuf,
    fleet: String,
    slot: String,
}

impl Rig {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("-f")
            .arg(&self.file)
            .env("HANGAR_STATE_DIR", &self.state)
            .env_remove("RUST_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn log(&self) -> PathBuf {
        Path::new(DEFAULT_CONSOLE_DIR).join(hangar::model::names::console_log_name(&self.slot, 1))
    }
}

async fn rig() -> Option<Rig> {
    let mut private = PrivatePool::new("con")?;
    private.guard.console_dir = Some(PathBuf::from(DEFAULT_CONSOLE_DIR));
    let PrivatePool {
        fleet, pool, guard, ..
    } = private;
    let slot = format!("{fleet}-linux-0");
    // The console log goes where the binary's hosts write them (the
    // default console dir): `hangar logs` must find this one by name.
    let host = kit::connect(kit::host_config("local", URI, &pool)).await;
    let owner = kit::ownership(&fleet, "linux", 0, 1, Utc::now(), kit::small_vm(None));
    host.create(&kit::vm_create(
        owner,
        NetworkAttachment::None,
        "ghs_console_canary",
    ))
    .await
    .unwrap();

    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("fleet.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: {fleet}\nspec:\n  github:\n    \
             repository: acme/widgets\n    auth:\n      tokenEnv: HANGAR_CONSOLE_TOKEN\n  \
             hosts:\n    - name: local\n      uri: {URI}\n      storagePool: {pool}\n      \
             domainType: qemu\n      cpuOvercommit: 16\n      network:\n        mode: none\n  pools:\n    - name: linux\n      \
             count: 1\n      vm:\n        cpus: 1\n        memory: 256MiB\n        \
             disk: 1GiB\n        image: base.qcow2\n"
        ),
    )
    .unwrap();
    Some(Rig {
        _guard: guard,
        state: state.path().join("state"),
        _state: state,
        file,
        fleet,
        slot,
    })
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < until, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Everything a child writes on `pipe`, as it comes.
fn collect(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    rx
}

/// Reads `rx` into `seen` until it holds `needle`.
fn wait_for(rx: &mpsc::Receiver<String>, seen: &mut String, needle: &str, within: Duration) {
    let until = Instant::now() + within;
    while !seen.contains(needle) {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) => seen.push_str(&s),
            Err(_) => panic!("no {needle:?} within {within:?}; got:\n{seen}"),
        }
    }
}

fn exit_within(child: &mut Child, within: Duration) -> i32 {
    exited(child, within, None)
}

/// The child's exit code once it exits within `within`; otherwise it is
/// killed and the test fails with what it said on stderr (`err`, after
/// `said`): whether it saw the console close tells a takeover libvirt did
/// not deliver from a client stuck after it.
fn exited(
    child: &mut Child,
    within: Duration,
    err: Option<(&mpsc::Receiver<String>, &mut String)>,
) -> i32 {
    let until = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if Instant::now() > until {
            let _ = child.kill();
            let said = err.map(|(rx, said)| {
                while let Ok(s) = rx.recv_timeout(Duration::from_millis(500)) {
                    said.push_str(&s);
                }
                said.clone()
            });
            panic!(
                "did not exit within {within:?}; stderr:\n{}",
                said.unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Attached with `hangar console SLOT EXTRA…`: the child, its stdout and
/// stderr, and what it said on stderr up to the attach.
fn attached(
    rig: &Rig,
    extra: &[&str],
) -> (
    Child,
    mpsc::Receiver<String>,
    mpsc::Receiver<String>,
    String,
) {
    let (child, out, err) = attach(rig, extra);
    let mut said = String::new();
    wait_for(
        &err,
        &mut said,
        "Escape character is ^]",
        Duration::from_secs(20),
    );
    (child, out, err, said)
}

fn attach(rig: &Rig, extra: &[&str]) -> (Child, mpsc::Receiver<String>, mpsc::Receiver<String>) {
    let mut args = vec!["console", rig.slot.as_str()];
    args.extend(extra);
    let mut child = rig
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    (child, out, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_console_of_a_slot_on_real_libvirtd() {
    let Some(rig) = rig().await else {
        return;
    };
    let dumped = must(&["dumpxml", &rig.slot]);
    assert!(dumped.contains("<console type='pty'"), "{dumped}");

    // The firmware's lines reach the log with nobody attached.
    wait_until(
        "the firmware's line in the console log",
        Duration::from_secs(90),
        || {
            std::fs::read(rig.log())
                .map(|b| String::from_utf8_lossy(&b).contains(FIRMWARE_LINE))
                .unwrap_or(false)
        },
    );
    let (code, stdout, stderr) = rig.run(&["logs", &rig.slot]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(FIRMWARE_LINE), "{stdout}");
    let (code, _, stderr) = rig.run(&["logs", &rig.slot, "--generation", "2"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains(&format!("generation 2 of {}", rig.slot)),
        "{stderr}"
    );
    let (code, _, stderr) = rig.run(&["console", "nope"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "no slot nope in fleet {}; slots: {}",
            rig.fleet, rig.slot
        )),
        "{stderr}"
    );

    // `logs --follow` shows what comes later.
    let mut follower = rig
        .command(&["logs", &rig.slot, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let followed = collect(follower.stdout.take().unwrap());
    let mut followed_text = String::new();
    wait_for(
        &followed,
        &mut followed_text,
        FIRMWARE_LINE,
        Duration::from_secs(10),
    );
    let before = followed_text.matches("SeaBIOS").count();

    // Attached: a reset makes the firmware print again, live.
    let (mut a, a_out, a_err, mut a_said) = attached(&rig, &[]);
    must(&["reset", &rig.slot]);
    let mut a_seen = String::new();
    wait_for(&a_out, &mut a_seen, "SeaBIOS", Duration::from_secs(60));
    // ... and the log still gets every byte while a console is attached.
    let until = Instant::now() + Duration::from_secs(30);
    while followed_text.matches("SeaBIOS").count() <= before {
        let left = until.saturating_duration_since(Instant::now());
        match followed.recv_timeout(left) {
            Ok(s) => followed_text.push_str(&s),
            Err(_) => panic!("the log got nothing new while attached:\n{followed_text}"),
        }
    }

    // A second client is refused while one is attached; --force takes over.
    let (code, _, stderr) = rig.run(&["console", &rig.slot]);
    assert_eq!(code, 3, "{stderr}");
    let (mut b, _b_out, b_err, mut b_said) = attached(&rig, &["--force"]);
    // libvirtd aborts the first client's stream; on a loaded machine its
    // notice can take a while to arrive (a CI run saw more than 20 s).
    assert_eq!(
        exited(&mut a, Duration::from_secs(60), Some((&a_err, &mut a_said))),
        0
    );
    wait_for(&a_err, &mut a_said, "closed", Duration::from_secs(5));

    // Ctrl-] detaches.
    b.stdin.as_mut().unwrap().write_all(&[0x1d]).unwrap();
    assert_eq!(
        exited(&mut b, Duration::from_secs(20), Some((&b_err, &mut b_said))),
        0
    );
    wait_for(
        &b_err,
        &mut b_said,
        &format!("detached from {}", rig.slot),
        Duration::from_secs(5),
    );
    // Detached, the console is free again: attaching without --force works.
    let (mut c, _c_out, _c_err, _c_said) = attached(&rig, &[]);
    drop(c.stdin.take());
    assert_eq!(exit_within(&mut c, Duration::from_secs(20)), 0);

    // SIGTERM ends --follow with 0.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(follower.id() as i32, libc::SIGTERM) };
    assert_eq!(exit_within(&mut follower, Duration::from_secs(10)), 0);
}
