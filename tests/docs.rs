//! The docs' command lines run, against the sandbox, and exit as the docs
//! say. So that README.md and docs/*.md stay true.
//!
//! Which lines: in each file, in order,
//! - every line of a fenced block or an indented (4+ spaces) block that
//!   starts with `hangar ` or contains `cargo run -- ` (what follows it is
//!   the command: `.ci/install-deps && cargo run -- apply ...`);
//! - every inline code span that starts with `hangar ` or `cargo run -- `
//!   and names a file (`-f`), e.g. the operations table's rows.
//!
//! How they run: `cargo run --` is the built binary; the file `fleet.yaml`
//! and the placeholder `FILE` become a copy of `examples/quickstart.yaml`
//! (the sandbox); `--every D` gets `--max-passes 1`; a `# comment` and a
//! `> file` redirect are dropped. All lines of one doc share one state dir,
//! so that `apply` before `diff` means what the text means.
//!
//! Skipped, and listed in the output: lines with placeholders (`...`, `[`,
//! `|`, `<`, `NAME`, `SLOT`), lines naming another fleet's file or slot
//! (`/etc/hangar`, `ldmx-umn`), and `destroy` without `--yes` (it asks at a
//! terminal).
//!
//! Expected exit: the number after "exit"/"exits" in the line's comment or
//! right after an inline span; else `diff` may exit 0 or 1 (both are its
//! documented answers) and every other command 0.

#[path = "support/bin.rs"]
mod bin;

use std::path::{Path, PathBuf};

use bin::*;

#[derive(Debug)]
struct DocCommand {
    doc: String,
    line: usize,
    text: String,
    /// The exit code the doc promises, if it says one.
    promised: Option<i32>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docs() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    files.extend(more);
    files
}

/// The number after "exit " or "exits " in `text`, if any.
fn exit_in(text: &str) -> Option<i32> {
    for word in ["exits ", "exit "] {
        if let Some(rest) = text.split(word).nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
    }
    None
}

/// The command in a line, without what precedes `cargo run -- `.
fn command_in(line: &str) -> Option<&str> {
    let t = line.trim();
    if let Some(i) = t.find("cargo run -- ") {
        return Some(&t[i..]);
    }
    t.starts_with("hangar ").then_some(t)
}

fn extract(doc: &Path) -> Vec<DocCommand> {
    let text = std::fs::read_to_string(doc).unwrap();
    let name = doc.strip_prefix(repo()).unwrap().display().to_string();
    let mut out = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let block = fenced || line.starts_with("    ");
        if let Some(cmd) = command_in(line).filter(|_| block) {
            let (cmd, comment) = cmd.split_once(" #").unwrap_or((cmd, ""));
            out.push(DocCommand {
                doc: name.clone(),
                line: i + 1,
                text: cmd.trim().to_string(),
                promised: exit_in(comment),
            });
            continue;
        }
        // Inline spans; a span may not cross a line here, which is enough
        // for the rows and sentences that name a file.
        let mut rest = line;
        while let Some(start) = rest.find('`') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('`') else { break };
            let span = &after[..end];
            let tail = &after[end + 1..];
            if (span.starts_with("hangar ") || span.starts_with("cargo run -- "))
                && span.contains(" -f ")
            {
                let said: String = tail.chars().take(12).collect();
                out.push(DocCommand {
                    doc: name.clone(),
                    line: i + 1,
                    text: span.to_string(),
                    promised: exit_in(&said),
                });
            }
            rest = tail;
        }
    }
    out
}

/// Why a command is not run, if it is not.
fn skip_reason(cmd: &str) -> Option<&'static str> {
    let placeholders = ["...", "[", "|", "<", "NAME", "SLOT"];
    if placeholders.iter().any(|p| cmd.contains(p)) {
        return Some("placeholder");
    }
    if cmd.contains("/etc/hangar") || cmd.contains("ldmx-umn") {
        return Some("another fleet's file or slot");
    }
    let words: Vec<&str> = cmd.split_whitespace().collect();
    if words.contains(&"destroy") && !words.contains(&"--yes") && !words.contains(&"-y") {
        return Some("asks for confirmation at a terminal");
    }
    None
}

/// The argument list to run for `cmd`, with `file` for the fleet file.
fn argv(cmd: &str, file: &Path) -> Vec<String> {
    let cmd = cmd
        .strip_prefix("cargo run -- ")
        .or_else(|| cmd.strip_prefix("hangar "))
        .unwrap_or(cmd);
    let cmd = cmd.split(" >").next().unwrap_or(cmd);
    let mut args: Vec<String> = cmd
        .split_whitespace()
        .map(|w| match w {
            "fleet.yaml" | "FILE" => file.display().to_string(),
            w => w.to_string(),
        })
        .collect();
    if args.iter().any(|a| a == "--every") && !args.iter().any(|a| a == "--max-passes") {
        args.extend(["--max-passes".to_string(), "1".to_string()]);
    }
    args
}

#[test]
fn every_documented_sandbox_command_exits_as_the_docs_say() {
    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    let mut wrong = Vec::new();
    for doc in docs() {
        let sb = Sandbox::new();
        let file = sb.edited("fleet.yaml", |t| t);
        for c in extract(&doc) {
            if let Some(why) = skip_reason(&c.text) {
                skipped.push(format!("{}:{}: {} ({why})", c.doc, c.line, c.text));
                continue;
            }
            let args = argv(&c.text, &file);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut cmd = sb.command(&args);
            cmd.current_dir(repo());
            let r = Run::from(cmd.output().unwrap(), &args);
            let ok = match (c.promised, args.first()) {
                (Some(n), _) => r.code == n,
                (None, Some(&"diff")) => r.code == 0 || r.code == 1,
                (None, _) => r.code == 0,
            };
            let at = format!("{}:{}: {}", c.doc, c.line, c.text);
            if !ok {
                wrong.push(format!("{at} (promised {:?})\n{r}", c.promised));
            }
            ran.push(at);
        }
    }
    eprintln!(
        "ran:\n  {}\nskipped:\n  {}",
        ran.join("\n  "),
        skipped.join("\n  ")
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        ran.len() >= 10,
        "only {} documented commands ran",
        ran.len()
    );
}
