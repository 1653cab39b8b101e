//! Defects 13, 14, 15: secrets stay out of stderr at any verbosity, out of
//! core dumps, and a credential file others can read is called out.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "PASSWORD-4d1b9c";

fn fleet(api_url: &str, auth: &str) -> String {
    super::input::fleet_file(api_url, auth, "sandbox", "", "base.qcow2", "")
}

/// `hangar ARGS… -f fleet.yaml` in a private state dir: (exit, stderr).
fn hangar(yaml: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hangar"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(args)
        .arg("-f")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn defect_13_a_url_password_never_reaches_stderr_at_trace() {
    let yaml = fleet(
        &format!("http://user:{PASSWORD}@127.0.0.1:9"),
        "tokenEnv: GITHUB_TOKEN",
    );
    for cmd in ["validate", "diff"] {
        let (code, err) = hangar(
            &yaml,
            &["-vvv", cmd],
            &[("GITHUB_TOKEN", "ghs_0123456789abcdefghijklmn")],
        );
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(!err.contains(PASSWORD), "{cmd}: {err}");
        assert!(!err.contains("0123456789abcdef"), "{cmd}: {err}");
    }
}

/// The core size limit of a running `hangar github-sim` started with an
/// unlimited one, as `/proc/<pid>/limits` says.
fn core_limit_of_a_running_hangar(env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hangar"));
    cmd.args(["github-sim", "--listen", "127.0.0.1:0", "--token", "t"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let unlimited = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &unlimited);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let started = Instant::now();
    let line = loop {
        std::thread::sleep(Duration::from_millis(100));
        let text = std::fs::read_to_string(&limits).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap_or("")
            .to_string();
        // Read once the program runs (the sim logs nothing we can wait on).
        if started.elapsed() > Duration::from_millis(700) {
            break line;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn defect_14_core_dumps_are_off_unless_asked_for() {
    let off = core_limit_of_a_running_hangar(&[]);
    let words: Vec<&str> = off.split_whitespace().collect();
    assert_eq!(words.get(4..6), Some(&["0", "0"][..]), "{off}");
    let on = core_limit_of_a_running_hangar(&[("HANGAR_ALLOW_CORE_DUMPS", "1")]);
    assert!(on.contains("unlimited"), "{on}");
}

#[test]
fn defect_15_a_token_file_others_can_read_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "ghs_0123456789abcdefghijklmn\n").unwrap();
    let yaml = fleet(
        "http://127.0.0.1:9",
        &format!("tokenFile: {}", token.display()),
    );
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, err) = hangar(&yaml, &["diff"], &[]);
    assert!(
        err.contains("readable or writable by group or others") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("0123456789abcdef"), "{err}");
}
