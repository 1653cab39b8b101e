//! The fleet file from the outside: the examples load, the committed schema
//! is current, and every malformed file in `tests/fixtures/fleet/bad` fails
//! with the file, line, column and field path its header promises, without
//! a panic.
//!
//! A fixture's first line is `# expect: LINE:COL PATH | TEXT`: some problem
//! must sit at LINE:COL on PATH with TEXT in its message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hangar::fleet::{self, FleetError};
use hangar::model::host::{DomainType, HostFacts};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fleet")
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

struct Expect {
    line: u32,
    column: u32,
    path: String,
    text: String,
}

fn parse_expect(file: &Path, text: &str) -> Expect {
    let header = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", file.display()));
    let (pos_path, msg) = header.split_once(" | ").expect("` | ` in expect header");
    let (pos, path) = pos_path.split_once(' ').expect("position and path");
    let (line, column) = pos.split_once(':').expect("LINE:COL");
    Expect {
        line: line.parse().unwrap(),
        column: column.parse().unwrap(),
        path: path.to_string(),
        text: msg.to_string(),
    }
}

fn load_err(path: &Path) -> FleetError {
    let p = path.to_path_buf();
    let result = std::panic::catch_unwind(move || hangar::files::fleet::load(&p));
    match result {
        Ok(Ok(_)) => panic!("{} loaded but must fail", path.display()),
        Ok(Err(e)) => e,
        Err(_) => panic!("{} made the loader panic", path.display()),
    }
}

#[test]
fn every_malformed_fixture_fails_at_its_promised_line_column_and_path() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join("bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus shrank to {}", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let want = parse_expect(file, &text);
        let err = load_err(file);
        let hit = err.problems().iter().any(|p| {
            p.line == want.line
                && p.column == want.column
                && p.path == want.path
                && p.message.contains(&want.text)
        });
        // Every problem prints as FILE:LINE:COL: PATH: message.
        let shown = file.display().to_string();
        for (line, p) in err.to_string().lines().zip(err.problems()) {
            let prefix = format!("{shown}:{}:{}: {}: ", p.line, p.column, p.path);
            assert!(line.starts_with(&prefix), "{line:?} lacks {prefix:?}");
        }
        if !hit {
            failures.push(format!(
                "{}: want {}:{} {} | {}\n  got:\n    {}",
                file.file_name().unwrap().to_string_lossy(),
                want.line,
                want.column,
                want.path,
                want.text,
                err.to_string().replace('\n', "\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn alias_bomb_fails_fast_instead_of_expanding() {
    let file = fixtures().join("bad/alias-bomb.yaml");
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(
            hangar::files::fleet::load(&file)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
    });
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the alias bomb must fail within 10 s");
    let msg = result.expect_err("an alias bomb must not load");
    assert!(msg.contains("too large or too complex"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn an_empty_string_and_a_comment_only_file_are_errors_at_the_start() {
    for text in ["", "\n\n", "# nothing here\n"] {
        let err = fleet::load_str("e.yaml", text).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(
            (p.line, p.column, p.path.as_str()),
            (1, 1, "<root>"),
            "{text:?}"
        );
        assert!(p.message.contains("empty"), "{}", p.message);
    }
}

#[test]
fn a_missing_file_is_an_error_naming_the_file() {
    let err = hangar::files::fleet::load(Path::new("/nonexistent/fleet.yaml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/fleet.yaml: cannot read: no such file"
    );
}

#[test]
fn validation_reports_every_problem_not_just_the_first() {
    let text = std::fs::read_to_string(repo_file("examples/ldmx-umn.yaml"))
        .unwrap()
        .replace("name: ldmx-umn", "name: LDMX")
        .replace("labels: [UMN]", "labels: [UMN, linux]")
        .replace("cpus: 2", "cpus: 0")
        .replace("pruneAbove: 80%", "pruneAbove: 0%");
    let err = fleet::load_str("f.yaml", &text).unwrap_err();
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "metadata.name",
            "spec.pools[0].labels[1]",
            "spec.pools[0].vm.cpus",
            "spec.pools[0].cache.pruneAbove"
        ]
    );
    assert_eq!(err.to_string().lines().count(), 4);
}

const CANARY: &str = "ghp_CanaryCanaryCanaryCanary0123456789";

#[test]
fn a_literal_token_never_reaches_the_error_or_its_snippet() {
    let text = std::fs::read_to_string(repo_file("examples/ldmx-umn.yaml"))
        .unwrap()
        .replace("tokenEnv: GITHUB_TOKEN", &format!("tokenFile: {CANARY}"));
    let err = fleet::load_str("f.yaml", &text).unwrap_err();
    assert_eq!(err.problems()[0].path, "spec.github.auth.tokenFile");
    assert!(err.problems()[0].message.contains("tokenEnv"));
    let mut rendered = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut rendered, &err)
        .unwrap();
    assert!(rendered.contains("f.yaml"), "{rendered}");
    for shown in [err.to_string(), format!("{err:?}"), rendered] {
        assert!(!shown.contains("Canary"), "the token leaked:\n{shown}");
    }
}

#[test]
fn miette_rendering_shows_a_snippet_at_the_problem() {
    let text = std::fs::read_to_string(repo_file("examples/ldmx-umn.yaml"))
        .unwrap()
        .replace("disk: 64GiB", "disk: 64GB");
    let err = fleet::load_str("f.yaml", &text).unwrap_err();
    let mut rendered = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut rendered, &err)
        .unwrap();
    assert!(rendered.contains("disk: 64GB"), "{rendered}");
    assert!(rendered.contains("f.yaml:28:15"), "{rendered}");
}

/// Field names are a contract: the file from the foundation issue, exactly as
/// written there, stays valid whatever the examples grow.
#[test]
fn the_foundation_issue_file_validates_as_written() {
    let f = hangar::files::fleet::load(&repo_file("tests/fixtures/fleet/issue-2-example.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.name(), "ldmx-umn");
    assert_eq!(f.fleet.spec.pools[0].count, 4);
}

#[test]
fn the_issue_example_and_the_quickstart_load() {
    let ldmx = hangar::files::fleet::load(&repo_file("examples/ldmx-umn.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ldmx.name(), "ldmx-umn");
    assert!(ldmx
        .source()
        .starts_with("# yaml-language-server: $schema=../schemas/fleet.schema.json\n"));
    let quick = hangar::files::fleet::load(&repo_file("examples/quickstart.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(quick.fleet.spec.github.simulator);
    assert!(quick.fleet.spec.hosts.iter().all(|h| h.is_sandbox()));
    assert_eq!(
        quick.fleet.spec.github.scope().unwrap().api_path(),
        "repos/sandbox/quickstart"
    );
    let pools: Vec<(bool, u32)> = quick
        .fleet
        .spec
        .pools
        .iter()
        .map(|p| (p.ephemeral, p.count))
        .collect();
    assert_eq!(pools, [(false, 2), (true, 2)]);
}

fn sandbox_facts(names: &[&str]) -> BTreeMap<String, HostFacts> {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                HostFacts {
                    memory_bytes: 8 << 30,
                    cpus: 4,
                    pool_free_bytes: None,
                    domain_type: DomainType::Test,
                    domain_type_reason: "sandbox".into(),
                    identity: None,
                    foreign: Default::default(),
                },
            )
        })
        .collect()
}

#[test]
fn quickstart_resolves_to_four_slots_spread_over_both_sandbox_hosts() {
    let quick = hangar::files::fleet::load(&repo_file("examples/quickstart.yaml")).unwrap();
    let desired = quick
        .resolve(
            &sandbox_facts(&["sandbox-1", "sandbox-2"]),
            &BTreeMap::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let placed: Vec<(&str, &str)> = desired
        .slots
        .iter()
        .map(|s| (s.name.as_str(), s.host.as_str()))
        .collect();
    assert_eq!(
        placed,
        [
            ("quickstart-build-0", "sandbox-1"),
            ("quickstart-build-1", "sandbox-2"),
            ("quickstart-pr-0", "sandbox-1"),
            ("quickstart-pr-1", "sandbox-2"),
        ]
    );
}

#[test]
fn ldmx_example_resolves_percent_memory_against_the_host() {
    let ldmx = hangar::files::fleet::load(&repo_file("examples/ldmx-umn.yaml")).unwrap();
    let mut facts = sandbox_facts(&["umn-node"]);
    facts.get_mut("umn-node").unwrap().memory_bytes = 100 << 30;
    facts.get_mut("umn-node").unwrap().cpus = 16;
    let desired = ldmx.resolve(&facts, &BTreeMap::new()).unwrap();
    assert_eq!(desired.slots.len(), 4);
    // 18% of 100GiB, floored to MiB.
    assert_eq!(desired.slots[0].vm.memory_bytes, 18 << 30);
    assert_eq!(desired.slots[0].vm.cache_bytes, Some(70 << 30));
    assert_eq!(desired.slots[0].spec_hash.0.len(), 16);
}

#[test]
fn committed_schema_matches_the_types() {
    let path = repo_file("schemas/fleet.schema.json");
    let generated = fleet::schema_json();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "schemas/fleet.schema.json is stale: regenerate it with \
         `UPDATE_SCHEMA=1 cargo test --test fleet committed_schema` (or `hangar schema > schemas/fleet.schema.json`)"
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_located_at_its_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.yaml");
    std::fs::write(&path, b"apiVersion: hangar/v1\nkind: Fl\xffeet\n").unwrap();
    let err = hangar::files::fleet::load(&path).unwrap_err();
    let p = &err.problems()[0];
    assert_eq!((p.line, p.column), (2, 9), "{err}");
    assert!(err.to_string().contains(":2:9: "), "{err}");
}
