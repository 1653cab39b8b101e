//! The real binary on the embedded sandbox: the quickstart sequence, exit
//! codes, the lock between runs, and the daemon's ways of stopping. Each test
//! has its own `HANGAR_STATE_DIR`, so the sandbox's hosts and simulator are
//! private to it.

#[path = "support/bin.rs"]
mod bin;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bin::*;
use hangar::reconcile::lock::FleetLock;
use serde_json::Value;

const QUICKSTART_SLOTS: [&str; 4] = [
    "quickstart-build-0",
    "quickstart-build-1",
    "quickstart-pr-0",
    "quickstart-pr-1",
];

#[test]
fn quickstart_sequence_through_the_binary() {
    let sb = Sandbox::new();
    let file = quickstart();
    let f = file.to_str().unwrap();

    let r = sb.run(&["apply", "-f", f]);
    assert_eq!(r.code, 0, "{r}");
    for slot in QUICKSTART_SLOTS {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with("+ create") && l.contains(slot)),
            "plan line for {slot}: {r}"
        );
        assert!(
            r.stdout
                .lines()
                .any(|l| l.contains(slot) && l.contains("running") && l.contains("online")),
            "status row for {slot}: {r}"
        );
    }
    assert!(r.stdout.contains("Plan: 4 to create"), "{r}");
    assert!(r.stderr.contains("converged"), "{r}");
    assert!(!r.stderr.contains("failed"), "{r}");

    let r = sb.run(&["diff", "-f", f]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("No changes"), "{r}");

    let status = sb.status(&file);
    assert_eq!(occupied(&status), QUICKSTART_SLOTS);
    for s in status["slots"].as_array().unwrap() {
        assert_eq!(s["vm"], "running", "{s}");
        assert_eq!(s["runner"], "online", "{s}");
        assert_eq!(s["inSync"], true, "{s}");
    }

    // One more build runner, one less PR runner.
    let changed = sb.edited("changed.yaml", |t| {
        let t = t.replacen("count: 2", "count: 3", 1);
        t.replacen("count: 2", "count: 1", 1)
    });
    let r = sb.run(&["diff", "-f", changed.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r}");
    let changes: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("+ ") || l.starts_with("- ") || l.starts_with("~ "))
        .collect();
    assert_eq!(changes.len(), 2, "{r}");
    assert!(
        changes[0].starts_with("+ create  quickstart-build-2 on sandbox-"),
        "{r}"
    );
    assert!(
        changes[1].starts_with("- delete  quickstart-pr-1 on sandbox-")
            && changes[1].contains("scaled down"),
        "{r}"
    );
    assert!(
        r.stdout
            .contains("Plan: 1 to create, 0 to replace, 1 to delete"),
        "{r}"
    );
    // diff changed nothing.
    assert_eq!(sb.run(&["diff", "-f", f]).code, 0);

    let r = sb.run(&["destroy", "-f", f, "--yes"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stderr.contains("destroyed"), "{r}");
    let status = sb.status(&file);
    assert_eq!(occupied(&status), Vec::<String>::new(), "{status:#}");
    // Nothing of the fleet is left in the sandbox's hosts either.
    for host in ["sandbox-1", "sandbox-2"] {
        let node =
            std::fs::read_to_string(sb.state.path().join(format!("sandbox/{host}.xml"))).unwrap();
        assert!(!node.contains("<domain"), "{host}: {node}");
        assert!(!node.contains("quickstart-"), "{host}: {node}");
    }
    let r = sb.run(&["diff", "-f", f]);
    assert_eq!(r.code, 1, "after destroy the fleet is missing again: {r}");
}

#[test]
fn validate_of_a_malformed_file_exits_2_with_its_location() {
    let sb = Sandbox::new();
    let bad = sb.edited("bad.yaml", |t| t.replacen("count: 2", "count: many", 1));
    let r = sb.run(&["validate", "-f", bad.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r}");
    let line = std::fs::read_to_string(&bad)
        .unwrap()
        .lines()
        .position(|l| l.contains("count: many"))
        .unwrap()
        + 1;
    let at = format!("{}:{line}:14", bad.display());
    assert!(r.stderr.contains(&at), "expected {at}: {r}");
    assert!(r.stderr.contains("spec.pools[0].count"), "{r}");

    let good = sb.run(&["validate", "-f", quickstart().to_str().unwrap()]);
    assert_eq!(good.code, 0, "{good}");
    // Nothing was contacted or created.
    assert!(!sb.state.path().join("sandbox").exists());
}

#[test]
fn reconcile_once_converges_a_step_and_exits() {
    let sb = Sandbox::new();
    let file = quickstart();
    let f = file.to_str().unwrap();
    let r = sb.run(&["reconcile", "-f", f, "--once"]);
    assert_eq!(r.code, 0, "{r}");
    // Four creates and, on each of the two hosts, the runner volume they
    // install from.
    assert!(
        r.stderr.contains("pass: 6 planned, 6 done, 0 failed"),
        "{r}"
    );
    let status = sb.status(&file);
    assert_eq!(occupied(&status), QUICKSTART_SLOTS);
    // The next run finishes the job (the seeds come off).
    let r = sb.run(&["reconcile", "-f", f, "--once"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stderr.contains("0 failed"), "{r}");
}

#[test]
fn reconcile_every_with_max_passes_stops_by_itself() {
    let sb = Sandbox::new();
    let file = quickstart();
    let started = Instant::now();
    let r = sb.run(&reconcile_args(
        file.to_str().unwrap(),
        "1s",
        &["--max-passes", "2"],
    ));
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stderr.contains("stopped after 2 pass(es)"), "{r}");
    assert_eq!(
        r.stderr.lines().filter(|l| l.starts_with("pass: ")).count(),
        2,
        "{r}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(occupied(&sb.status(&file)), QUICKSTART_SLOTS);
}

#[test]
fn sigterm_stops_the_daemon_promptly_with_exit_0() {
    let sb = Sandbox::new();
    let file = quickstart();
    let (mut child, rx) = sb.reconcile(&file, "1m", &[]);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, "pass: ");
    let sent = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let code = wait_exit(&mut child, Duration::from_secs(10));
    let took = sent.elapsed();
    seen.extend(rx.try_iter());
    assert_eq!(code, Some(0), "stderr:\n{}", seen.join("\n"));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        seen.iter().any(|l| l.contains("stopped after 1 pass(es)")),
        "{}",
        seen.join("\n")
    );
}

#[test]
fn apply_while_the_lock_is_held_exits_4_and_changes_nothing() {
    let sb = Sandbox::new();
    let file = quickstart();
    let f = file.to_str().unwrap();
    let lock = FleetLock::try_acquire(sb.state.path(), "quickstart").unwrap();

    for args in [
        &["apply", "-f", f, "--wait", "0s"][..],
        &["reconcile", "-f", f, "--once"][..],
        &["destroy", "-f", f, "--yes"][..],
    ] {
        let r = sb.run(args);
        assert_eq!(r.code, 4, "{r}");
        assert!(r.stderr.contains("locked by another hangar run"), "{r}");
    }
    // diff and status take no lock and see nothing made.
    assert_eq!(occupied(&sb.status(&file)), Vec::<String>::new());
    assert_eq!(sb.run(&["diff", "-f", f]).code, 1);

    drop(lock);
    let r = sb.run(&["apply", "-f", f, "--wait", "0s"]);
    assert_ne!(r.code, 4, "{r}");
    assert_eq!(occupied(&sb.status(&file)), QUICKSTART_SLOTS);
}

#[test]
fn two_concurrent_applies_one_exits_4() {
    let sb = Sandbox::new();
    let file = quickstart();
    let f = file.to_str().unwrap();
    let spawn = || {
        sb.command(&["apply", "-f", f])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let runs = [a, b].map(|c| Run::from(c.wait_with_output().unwrap(), &["apply", "-f", f]));
    let mut codes: Vec<i32> = runs.iter().map(|r| r.code).collect();
    codes.sort();
    assert_eq!(codes, [0, 4], "{}\n{}", runs[0], runs[1]);
    let loser = runs.iter().find(|r| r.code == 4).unwrap();
    assert!(
        loser.stderr.contains("locked by another hangar run"),
        "{loser}"
    );
    assert!(
        !loser.stdout.contains("+ create"),
        "the loser planned nothing: {loser}"
    );

    // One fleet, made once.
    let status = sb.status(&file);
    assert_eq!(occupied(&status), QUICKSTART_SLOTS);
    for s in status["slots"].as_array().unwrap() {
        assert_eq!(s["generation"], 1, "{s}");
    }
}

#[test]
fn the_daemon_waits_for_the_lock_instead_of_failing() {
    let sb = Sandbox::new();
    let file = quickstart();
    let lock = FleetLock::try_acquire(sb.state.path(), "quickstart").unwrap();
    let (mut child, rx) = sb.reconcile(&file, "1s", &["--max-passes", "1"]);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, "reconciling fleet quickstart");
    // Held: no pass happens, the daemon keeps running.
    std::thread::sleep(Duration::from_secs(3));
    seen.extend(rx.try_iter());
    assert!(child.try_wait().unwrap().is_none(), "{}", seen.join("\n"));
    assert!(
        !seen.iter().any(|l| l.starts_with("pass: ")),
        "{}",
        seen.join("\n")
    );
    assert_eq!(occupied(&sb.status(&file)), Vec::<String>::new());

    drop(lock);
    let code = wait_exit(&mut child, Duration::from_secs(30));
    seen.extend(rx.try_iter());
    assert_eq!(code, Some(0), "{}", seen.join("\n"));
    assert!(
        seen.iter()
            .any(|l| l.starts_with("pass: 6 planned, 6 done")),
        "{}",
        seen.join("\n")
    );
}

#[test]
fn the_daemon_keeps_the_last_good_file_and_picks_up_a_good_edit() {
    let sb = Sandbox::new();
    let file = sb.edited("fleet.yaml", |t| t);
    let original = std::fs::read_to_string(&file).unwrap();
    let (mut child, rx) = sb.reconcile(&file, "1s", &["--max-passes", "4"]);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, "pass: ");

    write_atomically(&file, &original.replacen("count: 2", "count: many", 1));
    wait_for_line(
        &rx,
        &mut seen,
        "the last good version of the file stays in use",
    );
    wait_for_line(&rx, &mut seen, "pass: ");
    // One build runner fewer.
    write_atomically(&file, &original.replacen("count: 2", "count: 1", 1));
    wait_for_line(&rx, &mut seen, "changed; using the new file");
    let code = wait_exit(&mut child, Duration::from_secs(60));
    seen.extend(rx.try_iter());
    let log = seen.join("\n");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("stopped after 4 pass(es)"), "{log}");
    assert!(log.contains("count"), "the bad edit is reported: {log}");

    let status = sb.status(&file);
    assert_eq!(
        occupied(&status),
        ["quickstart-build-0", "quickstart-pr-0", "quickstart-pr-1"],
        "{status:#}"
    );
}

#[test]
fn destroy_removes_the_fleet_and_nothing_else() {
    let sb = Sandbox::new();
    let file = quickstart();
    let f = file.to_str().unwrap();
    let r = sb.run(&["reconcile", "-f", f, "--once"]);
    assert_eq!(r.code, 0, "{r}");

    // Someone else's domains (one named like a slot of ours) and volume on
    // sandbox-1, written into its node file between two commands.
    let node = sb.state.path().join("sandbox/sandbox-1.xml");
    let foreign_domains = "<domain type='test'><name>quickstart-build-7</name>\
         <memory>524288</memory><os><type>hvm</type></os></domain>\
         <domain type='test'><name>legacy-builder</name>\
         <memory>524288</memory><os><type>hvm</type></os></domain>";
    let text = std::fs::read_to_string(&node).unwrap();
    let text = text.replacen("</memory>", &format!("</memory>{foreign_domains}"), 1);
    let text = text.replacen(
        "</pool>",
        "<volume><name>notes.raw</name><capacity unit='M'>16</capacity>\
         <target><format type='raw'/></target></volume></pool>",
        1,
    );
    std::fs::write(&node, text).unwrap();
    // And runners that are not ours: one named like a slot without the
    // fleet's label, one with the label but no slot's name.
    let sim_file = sb.state.path().join("github-sim.json");
    let mut world: Value =
        serde_json::from_str(&std::fs::read_to_string(&sim_file).unwrap()).unwrap();
    let runners = world["scopes"]["repos/sandbox/quickstart"]["runners"]
        .as_object_mut()
        .unwrap();
    let template = runners.values().next().unwrap().clone();
    let mut foreign = Vec::new();
    for (id, name, label) in [
        (9001, "quickstart-build-7", "other"),
        (9002, "legacy-runner", "hangar-quickstart"),
    ] {
        let mut r = template.clone();
        r["id"] = id.into();
        r["name"] = name.into();
        r["ephemeral"] = false.into();
        r["labels"] = serde_json::json!([{"id": 900, "name": label, "type": "custom"}]);
        r.as_object_mut().unwrap().remove("jit_config_sha256");
        runners.insert(id.to_string(), r.clone());
        foreign.push(r);
    }
    std::fs::write(&sim_file, serde_json::to_string(&world).unwrap()).unwrap();

    let r = sb.run(&["destroy", "-f", f, "--yes"]);
    assert_eq!(r.code, 0, "{r}");
    assert_eq!(r.stdout.matches("- delete").count(), 4, "{r}");

    let node_text = std::fs::read_to_string(&node).unwrap();
    for kept in [
        "<name>quickstart-build-7</name>",
        "<name>legacy-builder</name>",
        "<name>notes.raw</name>",
    ] {
        assert!(node_text.contains(kept), "{kept} gone: {node_text}");
    }
    assert!(
        !node_text.contains("hangar.dev/xmlns"),
        "a domain of ours is left: {node_text}"
    );
    let world: Value = serde_json::from_str(&std::fs::read_to_string(&sim_file).unwrap()).unwrap();
    let runners = world["scopes"]["repos/sandbox/quickstart"]["runners"]
        .as_object()
        .unwrap();
    let left: Vec<&Value> = runners.values().collect();
    assert_eq!(left.len(), 2, "{left:#?}");
    for r in &foreign {
        assert_eq!(
            runners.get(&r["id"].to_string()),
            Some(r),
            "foreign runner changed"
        );
    }
    assert_eq!(occupied(&sb.status(&file)), Vec::<String>::new());
}

/// Issue 14: a foreign domain's memory reduces the capacity hangar places
/// into. Another tool's VMs that hold a sandbox host's 64 GiB leave no room
/// for one more runner: the plan says which slot waits for what on which
/// host, nothing is made, and `status` shows what the foreign domains hold.
#[test]
fn a_foreign_domains_memory_leaves_no_room_and_status_shows_it() {
    let sb = Sandbox::new();
    let file = quickstart();
    let f = file.to_str().unwrap();
    let r = sb.run(&["reconcile", "-f", f, "--once"]);
    assert_eq!(r.code, 0, "{r}");

    // Running, 60 GiB and 3 vCPUs on each host (the fleet's two VMs there
    // hold 1 GiB of the 64).
    for host in ["sandbox-1", "sandbox-2"] {
        let node = sb.state.path().join(format!("sandbox/{host}.xml"));
        let foreign = format!(
            "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\
             <name>big-{host}</name><memory unit='GiB'>60</memory><vcpu>3</vcpu>\
             <os><type>hvm</type></os><test:runstate>1</test:runstate></domain>"
        );
        let text = std::fs::read_to_string(&node).unwrap();
        std::fs::write(
            &node,
            text.replacen("</memory>", &format!("</memory>{foreign}"), 1),
        )
        .unwrap();
    }
    let status = sb.status(&file);
    for h in status["hosts"].as_array().unwrap() {
        assert_eq!(
            h["facts"]["foreign"],
            serde_json::json!({"domains": 1, "memoryBytes": 60u64 << 30, "vcpus": 3}),
            "{h}"
        );
    }
    let r = sb.run(&["status", "-f", f]);
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stdout.contains("NOT THE FLEET'S"), "{r}");
    assert_eq!(
        r.stdout.matches("1 running: 60GiB, 3 vCPUs").count(),
        2,
        "{r}"
    );

    // 3 GiB is left on each host, room for 6 runners of 512 MiB: of 14
    // more build runners (7 placed on each host), 12 are made, 2 wait.
    let grown = sb.edited("grown.yaml", |t| t.replacen("count: 2", "count: 16", 1));
    let g = grown.to_str().unwrap();
    let r = sb.run(&["diff", "-f", g]);
    assert_eq!(r.code, 1, "{r}");
    assert_eq!(r.stdout.matches("+ create").count(), 12, "{r}");
    let waits: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("no room on host sandbox-"))
        .collect();
    assert_eq!(waits.len(), 2, "{r}");
    for w in &waits {
        assert!(
            w.contains("needs 512MiB of memory, 0B left beside what runs there"),
            "{w}"
        );
    }
    // apply makes what fits and says the rest waits on something else.
    let r = sb.run(&["apply", "-f", g]);
    assert_ne!(r.code, 0, "{r}");
    assert!(r.stdout.contains("no room on host sandbox-"), "{r}");
    let status = sb.status(&grown);
    assert_eq!(occupied(&status).len(), 2 + 12 + 2, "{status:#}");
}

/// Issue 17, item 12: `destroy` beside a running daemon exited 0 and the
/// daemon made all of it again within seconds. Now it is refused with exit
/// 4, naming the daemon's pid and how to stop it, and nothing is removed.
#[test]
fn issue_17_item_12_destroy_while_the_daemon_runs_is_refused_with_exit_4() {
    let sb = Sandbox::new();
    let file = quickstart();
    let f = file.to_str().unwrap();
    let (mut child, rx) = sb.reconcile(&file, "1m", &[]);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, "pass: ");
    let before = occupied(&sb.status(&file));
    assert_eq!(before, QUICKSTART_SLOTS);

    let r = sb.run(&["destroy", "-f", f, "--yes"]);
    assert_eq!(r.code, 4, "{r}");
    let pid = child.id().to_string();
    assert!(r.stderr.contains(&format!("pid {pid}")), "{r}");
    assert!(r.stderr.contains("kill -TERM"), "{r}");
    assert!(r.stderr.contains("--force"), "{r}");
    assert_eq!(occupied(&sb.status(&file)), before, "nothing removed");

    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
    let r = sb.run(&["destroy", "-f", f, "--yes"]);
    assert_eq!(r.code, 0, "{r}");
    assert!(occupied(&sb.status(&file)).is_empty());
}

/// `apply -o json` prints JSON lines, each a document of its own: the
/// engine's events, then the result, then the status.
#[test]
fn apply_json_output_is_one_json_document_per_line() {
    let sb = Sandbox::new();
    let file = quickstart();
    let r = sb.run(&["apply", "-f", file.to_str().unwrap(), "-o", "json"]);
    assert_eq!(r.code, 0, "{r}");
    let docs: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"pass_started"), "{kinds:?}");
    assert!(kinds.contains(&"planned") && kinds.contains(&"action_finished"));
    assert_eq!(&kinds[kinds.len() - 2..], ["result", "status"], "{kinds:?}");
    assert_eq!(docs[docs.len() - 2]["converged"], true);
    assert_eq!(occupied(&docs[docs.len() - 1]), QUICKSTART_SLOTS);
}
