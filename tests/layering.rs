//! The layers stay layered: the fleet file (`fleet`), the planner (`plan`)
//! and the shared vocabulary (`model`) are pure. None of them may name an
//! async runtime, a provider crate, the file system or a module above them,
//! so that everything they decide can be tested from data alone.

use std::path::{Path, PathBuf};

/// Words a pure module must not contain outside comments.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "virt::",
    "octocrab",
    "std::fs",
    "std::net::TcpStream",
    "std::process",
    "crate::providers",
    "crate::reconcile",
    "crate::sandbox",
    "crate::sim",
    "crate::cli",
    "crate::provision",
    "crate::files",
    "crate::assemble",
];

/// What each pure module may import from the crate, besides itself.
const ALLOWED: &[(&str, &[&str])] = &[
    ("model", &["crate::secret"]),
    (
        "fleet",
        &["crate::model", "crate::plan::model", "crate::secret"],
    ),
    ("plan", &["crate::model"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its comments (line comments and doc comments;
/// block comments are not used in this crate).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let code = match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        };
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

#[test]
fn pure_layers_name_no_runtime_provider_or_file_system() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (module, allowed) in ALLOWED {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        assert!(!files.is_empty(), "src/{module} has no files");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (line, code) in code_lines(&text) {
                for word in FORBIDDEN {
                    if code.contains(word) {
                        violations.push(format!("{}:{line}: names `{word}`", f.display()));
                    }
                }
                let mut rest = code;
                while let Some(at) = rest.find("crate::") {
                    let path = &rest[at..];
                    let own = format!("crate::{module}");
                    if !path.starts_with(&own) && !allowed.iter().any(|a| path.starts_with(a)) {
                        let shown: String = path
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == ':' || *c == '_')
                            .collect();
                        violations.push(format!(
                            "{}:{line}: src/{module} imports `{shown}`",
                            f.display()
                        ));
                    }
                    rest = &rest[at + 7..];
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "pure layers reach outside:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_sees_a_violation() {
    // The scanner itself: a line that names tokio is caught, a comment is not.
    let text = "// tokio in a comment\nuse tokio::time; // and here\n";
    let hits: Vec<_> = code_lines(text)
        .filter(|(_, c)| c.contains("tokio"))
        .collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, 2);
}

/// What the CLI may not name: it parses, calls the engine or the access
/// layer, and prints; it reaches no provider, libvirt or GitHub itself.
const CLI_FORBIDDEN: &[&str] = &["crate::providers", "crate::sandbox", "virt::", "octocrab"];

#[test]
fn the_cli_calls_no_provider() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli"),
        &mut files,
    );
    assert!(!files.is_empty());
    let mut violations = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (line, code) in code_lines(&text) {
            for word in CLI_FORBIDDEN {
                if code.contains(word) {
                    violations.push(format!("{}:{line}: names `{word}`", f.display()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "the CLI reaches past the engine:\n{}",
        violations.join("\n")
    );
}
