//! Scenario 14: malformed fleet files through the binary. Every command that
//! takes a file exits 2 with a located `file:line:col` error before anything
//! is contacted: the state directory is never created and a simulator the
//! files point at sees no request. Alias bombs fail fast in bounded memory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cli::{hangar, text};
use super::results::Scenario;
use super::secrets::SimProcess;

const COMMANDS: [&[&str]; 6] = [
    &["validate"],
    &["diff"],
    &["apply", "--wait", "10s"],
    &["reconcile", "--once"],
    &["status"],
    &["destroy", "--yes"],
];

/// Malformed files that would reach the simulator at `port` if parsing let
/// them through.
fn own_corpus(port: u16) -> Vec<(&'static str, String)> {
    let head = format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: bad\nspec:\n  github:\n    \
         repository: acme/widgets\n    apiUrl: http://127.0.0.1:{port}\n    auth:\n      \
         tokenEnv: HANGAR_TEST_TOKEN\n  hosts:\n    - name: h1\n      uri: sandbox\n"
    );
    let pool = "  pools:\n    - name: p\n      count: 1\n      labels: [x]\n      vm:\n        \
                cpus: 1\n        memory: 512MiB\n        disk: 4GiB\n        image: base.qcow2\n";
    let deep = format!(
        "{head}{pool}extra: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let mut bomb = String::from("a0: &a0 [x,x,x,x,x,x,x,x,x,x]\n");
    for i in 1..=9 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            vec![format!("*a{}", i - 1); 10].join(",")
        ));
    }
    let mut merge_bomb = String::from("b0: &b0 {k0: v}\n");
    for i in 1..=12 {
        merge_bomb.push_str(&format!(
            "b{i}: &b{i} {{<<: [*b{p}, *b{p}], k{i}: v}}\n",
            p = i - 1
        ));
    }
    vec![
        (
            "count is a string",
            format!("{head}{}", pool.replace("count: 1", "count: one")),
        ),
        (
            "unknown field in a pool",
            format!("{head}{}      colour: red\n", pool),
        ),
        (
            "cpus zero",
            format!("{head}{}", pool.replace("cpus: 1", "cpus: 0")),
        ),
        (
            "memory without unit",
            format!("{head}{}", pool.replace("512MiB", "512")),
        ),
        (
            "bad indentation",
            format!("{head}{}", pool.replace("      count", "   count")),
        ),
        (
            "truncated mid-key",
            format!("{head}  pools:\n    - name: p\n      cou"),
        ),
        (
            "tab indentation",
            format!("{head}{}", pool.replace("      labels", "\tlabels")),
        ),
        ("duplicate key", format!("{head}{pool}  pools: []\n")),
        ("deep nesting", deep),
        ("alias bomb (10^10)", format!("{bomb}{head}{pool}")),
        ("merge-key bomb", format!("{merge_bomb}{head}{pool}")),
        (
            "invalid utf-8",
            format!("{head}{pool}").replace("name: p", "name: p\u{FFFD}"),
        ),
        (
            "NUL byte",
            format!("{head}{pool}").replace("labels: [x]", "labels: [x\0]"),
        ),
        (
            "huge scalar",
            format!(
                "{head}{}",
                pool.replace("name: p", &format!("name: {}", "p".repeat(600_000)))
            ),
        ),
    ]
}

/// Exit code, stderr, wall time and peak RSS (KiB) of one run. The child
/// is reaped by `wait4` (for its own rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run(args: &[&str], file: &Path, state_dir: &Path) -> (Option<i32>, String, Duration, i64) {
    let t0 = Instant::now();
    let child = Command::new(hangar())
        .args(args)
        .arg("-f")
        .arg(file)
        .env("HANGAR_STATE_DIR", state_dir)
        .env("HANGAR_TEST_TOKEN", "never-sent")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut err = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        use std::io::Read;
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child by pid, with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, reader.join().unwrap(), t0.elapsed(), usage.ru_maxrss)
}

fn located(stderr: &str, file: &Path) -> bool {
    let name = file.display().to_string();
    stderr.match_indices(&name).any(|(i, _)| {
        let rest = &stderr[i + name.len()..];
        let mut parts = rest.splitn(3, ':');
        parts.next() == Some("")
            && parts
                .next()
                .is_some_and(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()))
            && parts
                .next()
                .is_some_and(|c| c.chars().next().is_some_and(|c| c.is_ascii_digit()))
    })
}

#[test]
fn s14_malformed_files_exit_2_located_and_contact_nothing() {
    let sc = Scenario::begin(14);
    let dir = tempfile::tempdir().unwrap();
    let sim = SimProcess::start(dir.path(), "never-sent");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fleet/bad");
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&fixtures)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    files.sort();
    for (i, (what, body)) in own_corpus(sim.port).into_iter().enumerate() {
        let p = dir.path().join(format!("own-{i:02}.yaml"));
        let bytes = if what == "invalid utf-8" {
            let mut b = body.into_bytes();
            b.extend_from_slice(b"\n# \xff\xfe\n");
            b
        } else {
            body.into_bytes()
        };
        std::fs::write(&p, bytes).unwrap();
        files.push((what.to_string(), p));
    }
    assert!(files.len() >= 40, "corpus too small: {}", files.len());
    let state_dir = dir.path().join("state");
    let mut runs = 0;
    let mut worst_rss = 0i64;
    let mut slowest = Duration::ZERO;
    for (what, file) in &files {
        for args in COMMANDS {
            let (code, err, took, rss) = run(args, file, &state_dir);
            assert_eq!(code, Some(2), "{what} ({args:?}): exit {code:?}\n{err}");
            assert!(
                located(&err, file),
                "{what} ({args:?}): no file:line:col in\n{err}"
            );
            assert!(
                !state_dir.exists(),
                "{what} ({args:?}): the state directory was created"
            );
            assert!(
                took < Duration::from_secs(5),
                "{what} ({args:?}) took {took:?}"
            );
            assert!(rss < 128 * 1024, "{what} ({args:?}): peak RSS {rss} KiB");
            worst_rss = worst_rss.max(rss);
            slowest = slowest.max(took);
            runs += 1;
        }
    }
    assert_eq!(sim.requests(), 0, "the simulator was contacted");
    let _ = text(b"");
    sc.pass(
        &format!(
            "{} malformed files ({} from tests/fixtures/fleet/bad, {} more: wrong types, truncation, tabs, deep nesting, \
             a 10^10 alias bomb, a merge-key bomb, invalid UTF-8, NUL, a 600 kB scalar) through validate, diff, apply, \
             reconcile --once, status, destroy; files point at a live `hangar github-sim`",
            files.len(),
            files.len() - 14,
            14
        ),
        runs,
        &format!(
            "every run exits 2 with a file:line:col error; \
             state dir never created; simulator saw 0 requests; \
             slowest {:.2}s, peak RSS {} MiB",
            slowest.as_secs_f64(),
            worst_rss / 1024 + 1
        ),
    );
}
