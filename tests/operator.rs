//! The operator's small things, through the binary on the sandbox: output
//! into a closed pipe, `--wait 0`, `render` without contacting anything, and
//! a rotated token file picked up by the daemon.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/ports.rs"]
mod ports;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use bin::*;
use serde_json::Value;

/// A pipe whose reading end is already closed (`| head` that has exited).
fn closed_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two fresh descriptors we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: each descriptor is owned once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

#[test]
fn completions_into_a_closed_pipe_exit_quietly() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = sb
            .command(&["completions", shell])
            .stdout(closed_pipe())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{shell}: {stderr}");
        assert!(stderr.is_empty(), "{shell}: {stderr}");
    }
}

#[test]
fn wait_0_is_one_pass_then_an_honest_answer() {
    let sb = Sandbox::new();
    let file = quickstart();
    let r = sb.run(&[
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--wait",
        "0",
        "-o",
        "json",
    ]);
    assert!(r.code == 0 || r.code == 5, "{r}");
    let events: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let passes = events
        .iter()
        .filter(|e| e["event"] == "pass_started")
        .count();
    assert_eq!(passes, 1, "{r}");
    // What it says is left is what a fresh look shows: not the creates
    // that its one pass just did.
    let fresh = Sandbox::new();
    let r = fresh.run(&["apply", "-f", file.to_str().unwrap(), "--wait", "0"]);
    assert!(r.code == 0 || r.code == 5, "{r}");
    let left = r.stderr.split("still waiting for:").nth(1).unwrap_or("");
    assert!(!left.contains("+ create"), "{r}");
}

#[test]
fn render_user_data_contacts_nothing_and_domain_says_it_asks_the_host() {
    let sb = Sandbox::new();
    // Hosts nobody can reach, and a GitHub nobody serves.
    let file = sb.edited("unreachable.yaml", |t| {
        t.replace("uri: sandbox", "uri: qemu+ssh://ops-nowhere.invalid/system")
            .replace(
                "    simulator: true",
                "    repository: o/r\n    apiUrl: http://127.0.0.1:9\n    auth:\n      tokenEnv: OPS_UNSET_TOKEN",
            )
    });
    let f = file.to_str().unwrap();
    let r = sb.run(&["render", "user-data", "-f", f, "--slot", "quickstart-pr-1"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.starts_with("#cloud-config"), "{r}");
    assert!(r.stdout.contains("hostname: quickstart-pr-1"), "{r}");

    let r = sb.run(&["render", "user-data", "-f", f, "--slot", "quickstart-pr-7"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains(
            "slots: quickstart-build-0, quickstart-build-1, quickstart-pr-0, quickstart-pr-1"
        ),
        "slot names come from the file: {r}"
    );

    let r = sb.run(&[
        "render",
        "domain",
        "-f",
        quickstart().to_str().unwrap(),
        "--slot",
        "quickstart-pr-1",
    ]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stderr.contains("asking the hosts"), "{r}");
    assert!(r.stdout.contains("<name>quickstart-pr-1</name>"), "{r}");
}

/// `hangar github-sim` on a free loopback port, and its address.
fn github_sim(sb: &Sandbox, token: &str) -> (std::process::Child, String) {
    let port = ports::free_port();
    let listen = format!("127.0.0.1:{port}");
    let (sim, rx) = sb.spawn(&["github-sim", "--listen", &listen, "--token", token]);
    wait_for_line(&rx, &mut Vec::new(), "listening");
    (sim, listen)
}

/// The quickstart against `hangar github-sim` at `listen` with a token file.
fn with_token_file(sb: &Sandbox, listen: &str, token: &std::path::Path) -> std::path::PathBuf {
    sb.edited("fleet.yaml", |t| {
        t.replace(
            "    simulator: true",
            &format!(
                "    repository: ops/tokens\n    apiUrl: http://{listen}\n    auth:\n      tokenFile: {}",
                token.display()
            ),
        )
    })
}

#[test]
fn the_daemon_picks_up_a_rotated_token_file() {
    let sb = Sandbox::new();
    let (mut sim, listen) = github_sim(&sb, "the-new-token");
    let token = sb.state.path().join("token");
    std::fs::write(&token, "the-old-token\n").unwrap();
    let file = with_token_file(&sb, &listen, &token);
    let (mut child, rx) = sb.reconcile(&file, "1s", &["--max-passes", "60"]);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, "could not observe");
    write_atomically(&token, "the-new-token\n");
    wait_for_line(
        &rx,
        &mut seen,
        "credentials file: changed; using the new file",
    );
    wait_for_line(&rx, &mut seen, "4 done, 0 failed");
    // SAFETY: plain kill(2) on our own children.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        libc::kill(sim.id() as libc::pid_t, libc::SIGTERM);
    }
    let code = wait_exit(&mut child, Duration::from_secs(20));
    let _ = wait_exit(&mut sim, Duration::from_secs(5));
    seen.extend(rx.try_iter());
    assert_eq!(code, Some(0), "{}", seen.join("\n"));
    let log = seen.join("\n");
    assert!(
        !log.contains("the-new-token") && !log.contains("the-old-token"),
        "{log}"
    );
}

/// The stages `apply` printed for `slot`, in order.
fn stages_of(stderr: &str, slot: &str) -> Vec<String> {
    let prefix = format!("  stage    {slot} on ");
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.split_once(": ").map(|(_, s)| s.to_string()))
        .collect()
}

#[test]
fn apply_prints_each_slots_stages_as_the_guests_report_them_without_escapes() {
    let sb = Sandbox::new();
    let r = sb.run(&["apply", "-f", quickstart().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(
        stages_of(&r.stderr, "quickstart-build-0"),
        ["user ok", "docker ok", "cache mounted", "online"],
        "{r}"
    );
    // No cache in the pr pool.
    assert_eq!(
        stages_of(&r.stderr, "quickstart-pr-1"),
        ["user ok", "docker ok", "online"],
        "{r}"
    );
    assert!(
        !r.stderr.contains('\x1b') && !r.stdout.contains('\x1b'),
        "{r}"
    );
}

#[test]
fn a_failed_action_is_reported_once_without_escapes() {
    let sb = Sandbox::new();
    let token = sb.state.path().join("token");
    std::fs::write(&token, "not-the-token\n").unwrap();
    let (mut sim, listen) = github_sim(&sb, "the-token");
    let file = with_token_file(&sb, &listen, &token);
    let r = sb.run(&["apply", "-f", file.to_str().unwrap(), "--wait", "0"]);
    assert_eq!(r.code, 3, "{r}");
    for slot in ["quickstart-build-0", "quickstart-pr-1"] {
        let said = r
            .stderr
            .lines()
            .filter(|l| l.contains(&format!("create {slot}:")))
            .count();
        assert_eq!(said, 1, "{slot}: {r}");
    }
    assert!(r.stderr.contains("failed (above)"), "{r}");
    assert!(!r.stderr.contains('\x1b'), "{r}");
    let _ = sim.kill();
    let _ = sim.wait();
}

#[test]
fn init_writes_a_valid_fleet_file_for_the_host_with_its_schema_beside_it() {
    let sb = Sandbox::new();
    let etc = sb.state.path().join("etc-hangar");
    std::fs::create_dir(&etc).unwrap();
    let file = etc.join("fleet.yaml");
    let f = file.to_str().unwrap();
    let r = sb.run(&["init", "--uri", "test:///default", "-o", f, "--name", "lab"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("fleet lab is valid"), "{r}");
    let text = std::fs::read_to_string(&file).unwrap();
    // The test driver's node: 16 cpus, 3GiB, one pool `default-pool`.
    assert!(text.contains("16 cpus"), "{text}");
    assert!(text.contains("storagePool: default-pool"), "{text}");
    assert!(text.contains("uri: test:///default"), "{text}");
    // The modeline names the schema beside the file, which is there.
    let first = text.lines().next().unwrap();
    let schema = first
        .strip_prefix("# yaml-language-server: $schema=")
        .unwrap_or_else(|| panic!("{first}"));
    let written = std::fs::read_to_string(etc.join(schema)).unwrap();
    let doc: Value = serde_json::from_str(&written).unwrap();
    assert!(doc["$schema"].is_string(), "{written}");
    assert_eq!(sb.run(&["validate", "-f", f]).code, 0);

    // It does not overwrite without --force.
    let r = sb.run(&["init", "--uri", "test:///default", "-o", f]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("--force"), "{r}");
    let r = sb.run(&["init", "--uri", "test:///default", "-o", f, "--force"]);
    assert_eq!(r.code, 0, "{r}");

    // `hangar schema --out DIR` writes the same schema.
    let other = sb.state.path().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    let r = sb.run(&["schema", "--out", other.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(
        std::fs::read_to_string(other.join(schema)).unwrap(),
        written
    );

    // A libvirt that is not there: exit 3, nothing written.
    let missing = etc.join("none.yaml");
    let r = sb.run(&[
        "init",
        "--uri",
        "test:///nonexistent-ops-node.xml",
        "-o",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 3, "{r}");
    assert!(!missing.exists());
}
