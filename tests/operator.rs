//! The operator's small things, through the binary on the sandbox: output
//! into a closed pipe, `--wait 0`, `render` without contacting anything, and
//! a rotated token file picked up by the daemon.

#[path = "support/bin.rs"]
mod bin;

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

#[test]
fn the_daemon_picks_up_a_rotated_token_file() {
    let sb = Sandbox::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut sim = sb
        .command(&[
            "github-sim",
            "--listen",
            &listen,
            "--token",
            "the-new-token",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sim_rx = stderr_lines(&mut sim);
    wait_for_line(&sim_rx, &mut Vec::new(), "listening");

    let token = sb.state.path().join("token");
    std::fs::write(&token, "the-old-token\n").unwrap();
    let file = sb.edited("fleet.yaml", |t| {
        t.replace(
            "    simulator: true",
            &format!(
                "    repository: ops/rotation\n    apiUrl: http://{listen}\n    auth:\n      tokenFile: {}",
                token.display()
            ),
        )
    });
    let mut child = sb
        .command(&[
            "reconcile",
            "-f",
            file.to_str().unwrap(),
            "--every",
            "1s",
            "--max-passes",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = stderr_lines(&mut child);
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
