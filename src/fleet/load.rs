//! Reading a fleet file: bytes → located tree → secret scan → typed `Fleet`
//! → validation. Every failure is a located `FleetError`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::de;
use super::error::{byte_offset, FleetError, Locator, Problem};
use super::node::{self, FieldPath, Pos, SourceIndex, Value};
use super::types::{Fleet, Host, Pool};
use super::validate;

/// Fleet files are small; anything larger is refused before parsing.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// A fleet file that parsed and validated, with what is needed to locate
/// later problems (placement, overcommit) in its source.
#[derive(Debug, Clone)]
pub struct LoadedFleet {
    pub fleet: Fleet,
    path: PathBuf,
    source: Arc<str>,
    index: Arc<SourceIndex>,
}

impl LoadedFleet {
    /// The file as given to `load` (or the name given to `load_str`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fleet's name (`metadata.name`).
    pub fn name(&self) -> &str {
        &self.fleet.metadata.name
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.fleet.spec.pools.iter().find(|p| p.name == name)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.fleet.spec.hosts.iter().find(|h| h.name == name)
    }

    /// The source text, as read.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn locator(&self) -> (String, &str, &SourceIndex) {
        (self.path.display().to_string(), &self.source, &self.index)
    }

    pub(crate) fn error(&self, problems: Vec<Problem>) -> FleetError {
        let file = self.path.display().to_string();
        FleetError::new(problems, Some((&file, self.source.to_string())))
    }
}

/// Parse and validate the bytes of a fleet file; `file_name` is used in
/// messages and kept as the fleet's path. Bytes that are not UTF-8 are
/// located at the first bad one.
pub fn load_bytes(file_name: &Path, bytes: Vec<u8>) -> Result<LoadedFleet, FleetError> {
    let file = file_name.display().to_string();
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(&file));
    }
    let text = String::from_utf8(bytes).map_err(|e| not_utf8(&file, e))?;
    let mut loaded = load_str(&file, &text)?;
    loaded.path = file_name.to_path_buf();
    Ok(loaded)
}

/// The error for a file over [`MAX_FILE_BYTES`].
pub fn too_large(file: &str) -> FleetError {
    FleetError::file(
        file,
        format!("over the limit of {MAX_FILE_BYTES} bytes for a fleet file"),
    )
}

/// A file that is not UTF-8, located at its first bad byte: line and column
/// count the valid text before it, the snippet shows that text.
fn not_utf8(file: &str, e: std::string::FromUtf8Error) -> FleetError {
    let at = e.utf8_error().valid_up_to();
    let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
    let line = super::error::line_of(&valid, valid.len());
    let line_start = valid.rfind(['\n', '\r']).map_or(0, |i| i + 1);
    let column = valid[line_start..].chars().count() as u32 + 1;
    FleetError::new(
        vec![Problem {
            file: file.to_string(),
            line,
            column,
            path: FieldPath::root().to_string(),
            message: format!("not UTF-8 text: invalid byte at offset {at}"),
            span: Some((at, 0)),
        }],
        Some((file, valid)),
    )
}

/// Parse and validate fleet file text; `file_name` is used in messages.
pub fn load_str(file_name: &str, text: &str) -> Result<LoadedFleet, FleetError> {
    let source_of = |t: &str| Some((file_name, t.to_string()));
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(file_name));
    }
    let empty_index = SourceIndex::default();
    let loc = Locator {
        file: file_name,
        text,
        index: &empty_index,
    };
    let root = match node::parse(text) {
        Ok(root) => root,
        Err(f) => {
            let problem = loc.at(f.pos, 1, &f.path, f.message);
            return Err(FleetError::new(vec![problem], source_of(text)));
        }
    };
    let index = SourceIndex::build(&root);
    let loc = Locator {
        file: file_name,
        text,
        index: &index,
    };
    if matches!(root.value, Value::Null) {
        let problem = loc.at(
            Pos::START,
            0,
            &FieldPath::root(),
            "the file is empty: expected a fleet (apiVersion: hangar/v1, kind: Fleet, metadata, spec)",
        );
        return Err(FleetError::new(vec![problem], source_of(text)));
    }
    let secrets = validate::find_secrets(&root, &loc);
    if !secrets.is_empty() {
        let masked = mask(text, &secrets);
        return Err(FleetError::new(secrets, Some((file_name, masked))));
    }
    let fleet: Fleet = match de::from_node(&root) {
        Ok(fleet) => fleet,
        Err(e) => {
            let (pos, len, path) = e.at.unwrap_or((Pos::START, 0, FieldPath::root()));
            let problem = loc.at(pos, len, &path, e.message);
            return Err(FleetError::new(vec![problem], source_of(text)));
        }
    };
    let problems = validate::validate(&fleet, &loc);
    if !problems.is_empty() {
        return Err(FleetError::new(problems, source_of(text)));
    }
    Ok(LoadedFleet {
        fleet,
        path: PathBuf::from(file_name),
        source: Arc::from(text),
        index: Arc::new(index),
    })
}

/// The text with every line that holds a reported secret blanked out by
/// `*`, keeping byte offsets, so a rendered snippet cannot show it.
fn mask(text: &str, secrets: &[Problem]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for p in secrets {
        let Some((offset, len)) = p.span else {
            continue;
        };
        let line_start = byte_offset(
            text,
            Pos {
                line: p.line,
                column: 1,
            },
        );
        let end = super::error::next_break(text, offset + len).map_or(text.len(), |(i, _)| i);
        for b in &mut bytes[line_start..end] {
            if !b.is_ascii_whitespace() {
                *b = b'*';
            }
        }
    }
    // Only ASCII bytes of a UTF-8 text were replaced by ASCII, except where
    // a multi-byte character was overwritten; rebuild lossily to stay valid.
    String::from_utf8_lossy(&bytes).into_owned()
}
