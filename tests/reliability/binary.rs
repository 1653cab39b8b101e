//! Scenarios on the binary: kill -9 at every fault point (1), concurrent
//! runs (3), and the `--yes` guard of a removed pool (13, CLI half).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::cli::{text, Running, State};
use super::results::Scenario;

const FLEET: &str = "rel";

fn yaml(hosts: &[&str], pools: &[(&str, u32, bool, u32)]) -> String {
    let mut y = format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: {FLEET}\nspec:\n  github:\n    \
         simulator: true\n  policy:\n    bootTimeout: 5m\n  hosts:\n"
    );
    for h in hosts {
        y.push_str(&format!("    - name: {h}\n      uri: sandbox\n"));
    }
    y.push_str("  pools:\n");
    for (name, count, ephemeral, cpus) in pools {
        y.push_str(&format!(
            "    - name: {name}\n      count: {count}\n      ephemeral: {ephemeral}\n      \
             labels: [rel]\n      vm:\n        cpus: {cpus}\n        memory: 512MiB\n        \
             disk: 4GiB\n        image: base.qcow2\n      cache:\n        size: 1GiB\n"
        ));
    }
    y
}

fn slots(pools: &[(&str, u32, bool, u32)]) -> BTreeSet<String> {
    pools
        .iter()
        .flat_map(|(p, n, _, _)| (0..*n).map(move |i| format!("{FLEET}-{p}-{i}")))
        .collect()
}

/// One kill -9 trial: converge `before` (if any), then apply `after` with
/// `point` set to sleep, kill the process there, and re-apply.
fn kill_trial(
    point: &str,
    before: Option<&[(&str, u32, bool, u32)]>,
    after: &[(&str, u32, bool, u32)],
) -> String {
    let state = State::new(&yaml(&["h1"], before.unwrap_or(after)));
    if before.is_some() {
        state.converge(6);
        state.write_fleet(&yaml(&["h1"], after));
    }
    let mut cmd = state.cmd(&["apply", "--wait", "1m"]);
    cmd.env("FAILPOINTS", format!("{point}=sleep(120000)"));
    let mut run = Running::spawn(cmd);
    let reached = run.wait_for(&["fault point reached", point], Duration::from_secs(60));
    let lines = run.kill9();
    assert!(
        reached,
        "{point}: the fault point was not reached:\n{}",
        lines.join("\n")
    );
    let crashed = state.node("h1");
    let crashed_runners = state.runners();

    let out = state.run(&["apply", "--wait", "2m"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{point}: re-apply after the kill failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    state.assert_converged(
        &format!("kill -9 at {point}"),
        FLEET,
        &["h1"],
        &slots(after),
    );
    let diff = state.run(&["diff"]);
    assert_eq!(
        diff.status.code(),
        Some(0),
        "{point}: {}",
        text(&diff.stdout)
    );
    format!(
        "{} domain(s), {} volume(s), {} registration(s) left by the kill",
        crashed.ours(FLEET).len(),
        crashed
            .volumes
            .keys()
            .filter(|v| v.starts_with("rel-"))
            .count(),
        crashed_runners.len()
    )
}

#[test]
fn s01_kill_9_at_every_fault_point_then_reapply() {
    let sc = Scenario::begin(1);
    let e1: &[(&str, u32, bool, u32)] = &[("e", 1, true, 1)];
    let e1_bigger: &[(&str, u32, bool, u32)] = &[("e", 1, true, 2)];
    let p1: &[(&str, u32, bool, u32)] = &[("p", 1, false, 1)];
    let p1_bigger: &[(&str, u32, bool, u32)] = &[("p", 1, false, 2)];
    let p2: &[(&str, u32, bool, u32)] = &[("p", 2, false, 1)];
    type Trial<'a> = (
        &'a str,
        &'a str,
        Option<&'a [(&'a str, u32, bool, u32)]>,
        &'a [(&'a str, u32, bool, u32)],
    );
    let trials: Vec<Trial> = vec![
        ("after-jit-mint", "create (ephemeral)", None, e1),
        ("after-volume-create", "create (ephemeral)", None, e1),
        ("after-volume-create", "create (persistent)", None, p1),
        ("after-define", "create (ephemeral)", None, e1),
        ("after-define", "create (persistent)", None, p1),
        ("after-start", "create (ephemeral)", None, e1),
        ("after-jit-mint", "replace (ephemeral)", Some(e1), e1_bigger),
        (
            "after-volume-create",
            "replace (ephemeral)",
            Some(e1),
            e1_bigger,
        ),
        (
            "after-volume-create",
            "replace (persistent)",
            Some(p1),
            p1_bigger,
        ),
        ("after-define", "replace (ephemeral)", Some(e1), e1_bigger),
        (
            "delete-before-vm",
            "replace (persistent)",
            Some(p1),
            p1_bigger,
        ),
        ("mid-delete", "replace (ephemeral)", Some(e1), e1_bigger),
        ("mid-delete", "scale-down (persistent)", Some(p2), p1),
        ("delete-before-vm", "scale-down (persistent)", Some(p2), p1),
    ];
    // Trials are independent state directories; the processes mostly wait
    // between passes, so they run side by side.
    let results: BTreeMap<usize, String> = std::thread::scope(|s| {
        let handles: Vec<_> = trials
            .iter()
            .enumerate()
            .map(|(i, (point, during, before, after))| {
                s.spawn(move || {
                    (
                        i,
                        format!(
                            "{point} during {during}: {}",
                            kill_trial(point, *before, after)
                        ),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("trial panicked"))
            .collect()
    });
    for r in results.values() {
        eprintln!("kill -9: {r}");
    }
    let points: BTreeSet<&str> = trials.iter().map(|t| t.0).collect();
    sc.pass(
        &format!(
            "FAILPOINTS=<point>=sleep, SIGKILL once the point is reached; points: {}; during create, replace and scale-down, ephemeral and persistent",
            points.into_iter().collect::<Vec<_>>().join(", ")
        ),
        trials.len(),
        "re-apply exits 0 and `diff` is in sync; one running domain and one registration per slot, no leaked volume, no stray registration",
    );
}

#[test]
fn s03_concurrent_runs_never_double_a_slot() {
    let sc = Scenario::begin(3);
    let pools: &[(&str, u32, bool, u32)] = &[("p", 2, false, 1), ("e", 2, true, 1)];
    let hosts = ["h1", "h2"];
    let mut trials = 0;
    let mut losers = 0;
    for _ in 0..3 {
        let state = State::new(&yaml(&hosts, pools));
        let a = Running::spawn(state.cmd(&["apply", "--wait", "2m"]));
        let b = Running::spawn(state.cmd(&["apply", "--wait", "2m"]));
        let (ca, la) = a.wait();
        let (cb, lb) = b.wait();
        let mut codes = [ca, cb];
        codes.sort();
        assert_eq!(
            codes,
            [Some(0), Some(4)],
            "{}\n---\n{}",
            la.join("\n"),
            lb.join("\n")
        );
        let loser = if ca == Some(4) { la } else { lb };
        assert!(
            loser
                .iter()
                .any(|l| l.contains("locked by another hangar run")),
            "{loser:?}"
        );
        state.assert_converged("two applies at once", FLEET, &hosts, &slots(pools));
        trials += 1;
        losers += 1;
    }

    // apply while the daemon runs, with a file change in between.
    let state = State::new(&yaml(&hosts, pools));
    let daemon = Running::spawn(state.cmd(&["reconcile", "--every", "1s", "--max-passes", "12"]));
    let mut applied = Vec::new();
    let changed: &[(&str, u32, bool, u32)] = &[("p", 3, false, 1), ("e", 1, true, 1)];
    for i in 0..4 {
        if i == 2 {
            state.write_fleet(&yaml(&hosts, changed));
        }
        let o = state.run(&["apply", "--wait", "30s"]);
        applied.push(o.status.code());
        // Never two domains for one slot, at any moment we look.
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for h in hosts {
            for (slot, d) in state.node(h).ours(FLEET) {
                *count.entry(slot).or_default() += d.len();
            }
        }
        assert!(
            count.values().all(|n| *n <= 1),
            "two domains for a slot: {count:?}"
        );
        assert!(
            matches!(o.status.code(), Some(0) | Some(4)),
            "apply beside the daemon: {:?}\n{}",
            o.status.code(),
            text(&o.stderr)
        );
        losers += usize::from(o.status.code() == Some(4));
        trials += 1;
    }
    let (code, lines) = daemon.wait();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let out = state.run(&["apply", "--wait", "1m"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    state.assert_converged("apply beside the daemon", FLEET, &hosts, &slots(changed));
    sc.pass(
        "two `apply` started together (3×, 2 sandbox hosts); 4 `apply` runs while `reconcile --every 1s` runs, the file changed midway",
        trials,
        &format!(
            "never two domains for a slot; each pair: one exits 0, the other 4 (lock held); beside the daemon every apply exits 0 or 4 ({losers} exit-4 losers in all), the daemon waits for the lock and exits 0; converged"
        ),
    );
}

/// The `--yes` guard of a removed pool, on the binary (run by scenario 13).
pub async fn s13_cli_removed_pool_needs_yes() {
    tokio::task::spawn_blocking(|| {
        let both: &[(&str, u32, bool, u32)] = &[("p", 1, false, 1), ("q", 2, false, 1)];
        let only_p: &[(&str, u32, bool, u32)] = &[("p", 1, false, 1)];
        let state = State::new(&yaml(&["h1"], both));
        state.converge(6);
        state.write_fleet(&yaml(&["h1"], only_p));
        let node = state.node_text("h1");
        let sim = std::fs::read(state.state_dir().join("github-sim.json")).unwrap();
        let o = state.run(&["apply", "--wait", "30s"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(text(&o.stderr).contains("--yes"), "{}", text(&o.stderr));
        assert_eq!(
            state.node_text("h1"),
            node,
            "the sandbox changed without --yes"
        );
        assert_eq!(
            std::fs::read(state.state_dir().join("github-sim.json")).unwrap(),
            sim,
            "GitHub changed without --yes"
        );
        let o = state.run(&["apply", "--yes", "--wait", "1m"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        state.assert_converged("pool removed with --yes", FLEET, &["h1"], &slots(only_p));
    })
    .await
    .unwrap();
}
