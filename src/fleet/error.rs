//! Errors in a fleet file: one or more located problems.

use std::fmt;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

use super::node::{FieldPath, Pos, SourceIndex};

/// One thing wrong with a fleet file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file as given (`examples/ldmx-umn.yaml`).
    pub file: String,
    /// 1-based line; 0 when the problem has no position (unreadable file).
    pub line: u32,
    /// 1-based column in characters; 0 when there is no position.
    pub column: u32,
    /// The field path (`spec.pools[0].vm.memory`), `<root>` for the whole
    /// document.
    pub path: String,
    /// Short and lowercase; never contains a secret.
    pub message: String,
    /// Byte offset and length in the source, for the snippet.
    pub span: Option<(usize, usize)>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.column, self.path, self.message
            )
        }
    }
}

/// A fleet file that cannot be used. `Display` prints one
/// `FILE:LINE:COL: PATH: message` line per problem; as a miette
/// `Diagnostic` it also carries the source (secrets masked) and a label per
/// problem for a snippet.
#[derive(Debug)]
pub struct FleetError {
    problems: Vec<Problem>,
    source_code: Option<NamedSource<String>>,
}

impl FleetError {
    pub(crate) fn new(problems: Vec<Problem>, source: Option<(&str, String)>) -> Self {
        debug_assert!(!problems.is_empty());
        FleetError {
            problems,
            // Bare `\r` becomes `\n` (same length, offsets kept) so that the
            // snippet shows the lines the error's line number counts.
            source_code: source
                .map(|(name, text)| NamedSource::new(name, bare_cr_as_newline(&text))),
        }
    }

    /// A problem with the file itself (missing, unreadable, too large).
    pub(crate) fn file(file: &str, message: impl Into<String>) -> Self {
        FleetError::new(
            vec![Problem {
                file: file.to_string(),
                line: 0,
                column: 0,
                path: FieldPath::root().to_string(),
                message: message.into(),
                span: None,
            }],
            None,
        )
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for FleetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FleetError {}

impl Diagnostic for FleetError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("hangar::fleet_file"))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(
            "see docs/fleet-file.md, or `hangar schema` for the JSON Schema",
        ))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source_code.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source_code.as_ref()?;
        Some(Box::new(self.problems.iter().filter_map(|p| {
            p.span.map(|(offset, len)| {
                LabeledSpan::new(Some(format!("{}: {}", p.path, p.message)), offset, len)
            })
        })))
    }
}

/// Makes located problems for one source text.
pub(crate) struct Locator<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub index: &'a SourceIndex,
}

impl Locator<'_> {
    /// A problem at the value of `path` (or its nearest present ancestor).
    pub fn at_path(&self, path: &FieldPath, message: impl Into<String>) -> Problem {
        let (pos, len) = self.index.locate(path);
        self.at(pos, len, path, message)
    }

    /// A problem at the key of `path` when it has one, else at its value.
    pub fn at_key(&self, path: &FieldPath, message: impl Into<String>) -> Problem {
        match self.index.key_pos(path) {
            Some(pos) => {
                let len = match path.segments().last() {
                    Some(super::node::Segment::Key(k)) => k.chars().count() as u32,
                    _ => 0,
                };
                self.at(pos, len, path, message)
            }
            None => self.at_path(path, message),
        }
    }

    pub fn at(&self, pos: Pos, len: u32, path: &FieldPath, message: impl Into<String>) -> Problem {
        let offset = byte_offset(self.text, pos);
        let byte_len = self.text[offset..]
            .char_indices()
            .nth(len as usize)
            .map_or(self.text.len() - offset, |(i, _)| i);
        Problem {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.column,
            path: path.to_string(),
            message: message.into(),
            span: Some((offset, byte_len)),
        }
    }
}

/// Where the line break at or after `from` starts and how long it is.
/// Line breaks are YAML's (and editors'): `\n`, `\r\n`, and a bare `\r`, so
/// a file with old Mac line ends is located as its editor shows it.
pub(crate) fn next_break(text: &str, from: usize) -> Option<(usize, usize)> {
    let i = from + text[from..].find(['\n', '\r'])?;
    let len = if text[i..].starts_with("\r\n") { 2 } else { 1 };
    Some((i, len))
}

/// The 1-based line of byte `offset`, counting line breaks as
/// [`next_break`] does.
pub fn line_of(text: &str, offset: usize) -> u32 {
    let mut line = 1;
    let mut at = 0;
    while let Some((i, len)) = next_break(text, at) {
        if i + len > offset {
            break;
        }
        line += 1;
        at = i + len;
    }
    line
}

/// `text` with every bare `\r` replaced by `\n`.
pub(crate) fn bare_cr_as_newline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && chars.peek() != Some(&'\n') {
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}

/// Byte offset of a 1-based line and character column, clamped to the text.
pub(crate) fn byte_offset(text: &str, pos: Pos) -> usize {
    let mut offset = 0;
    for _ in 1..pos.line {
        match next_break(text, offset) {
            Some((i, len)) => offset = i + len,
            None => return text.len(),
        }
    }
    let line_end = next_break(text, offset).map_or(text.len(), |(i, _)| i);
    text[offset..line_end]
        .char_indices()
        .nth(pos.column.saturating_sub(1) as usize)
        .map_or(line_end, |(i, _)| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_prints_one_located_line_per_problem() {
        let mk = |line, path: &str, message: &str| Problem {
            file: "f.yaml".into(),
            line,
            column: 3,
            path: path.into(),
            message: message.into(),
            span: None,
        };
        let e = FleetError::new(
            vec![
                mk(2, "spec.hosts[0].name", "bad name"),
                mk(7, "spec.pools[1].count", "too many"),
            ],
            None,
        );
        assert_eq!(
            e.to_string(),
            "f.yaml:2:3: spec.hosts[0].name: bad name\nf.yaml:7:3: spec.pools[1].count: too many"
        );
        assert_eq!(
            FleetError::file("f.yaml", "cannot read: gone").to_string(),
            "f.yaml: cannot read: gone"
        );
    }

    #[test]
    fn a_bare_carriage_return_is_a_line_break() {
        let text = "a: 1\rb: 2\r\nc: 3\nd";
        assert_eq!(byte_offset(text, Pos { line: 2, column: 1 }), 5);
        assert_eq!(byte_offset(text, Pos { line: 3, column: 2 }), 12);
        assert_eq!(line_of(text, 12), 3);
        assert_eq!(line_of(text, text.len()), 4);
        assert_eq!(bare_cr_as_newline(text), "a: 1\nb: 2\r\nc: 3\nd");
    }

    #[test]
    fn byte_offset_counts_characters_in_the_line() {
        let text = "a: é\nbé: x\n";
        assert_eq!(byte_offset(text, Pos { line: 1, column: 1 }), 0);
        assert_eq!(byte_offset(text, Pos { line: 2, column: 3 }), 9);
        assert_eq!(byte_offset(text, Pos { line: 9, column: 1 }), text.len());
    }
}
