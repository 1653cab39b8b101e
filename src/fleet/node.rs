//! The fleet file as a located YAML tree: every value and every key carries
//! the line and column it came from, so that both parse errors and
//! validation problems can point at the source.
//!
//! serde-saphyr parses the text once into this tree (with hangar's budget
//! and strictness options); typed deserialization then runs over the tree
//! (see `de.rs`), which is how every error learns its field path.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub(crate) const START: Pos = Pos { line: 1, column: 1 };

    fn from_location(loc: &serde_saphyr::Location) -> Pos {
        Pos {
            line: u32::try_from(loc.line()).unwrap_or(u32::MAX).max(1),
            column: u32::try_from(loc.column()).unwrap_or(u32::MAX).max(1),
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Where a value sits in the document: `spec.pools[0].vm.memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Segment::Index(index));
        p
    }

    pub fn parent(&self) -> Option<Self> {
        let mut p = self.clone();
        p.0.pop().map(|_| p)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<root>");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A YAML value with the position of its first character (for an alias:
/// where the alias is used).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    /// Length in characters of the value's text, where it is a scalar
    /// (0 for collections).
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

impl Value {
    /// For messages: what kind of value this is.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A mapping entry; keys are scalars, kept as their text.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    /// Every node with its path, depth first in document order.
    pub fn walk(&self, mut f: impl FnMut(&FieldPath, &Node, Option<Pos>)) {
        fn go(
            node: &Node,
            path: &FieldPath,
            key_pos: Option<Pos>,
            f: &mut dyn FnMut(&FieldPath, &Node, Option<Pos>),
        ) {
            f(path, node, key_pos);
            match &node.value {
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        go(item, &path.index(i), None, f);
                    }
                }
                Value::Map(entries) => {
                    for e in entries {
                        go(&e.value, &path.key(&e.key), Some(e.key_pos), f);
                    }
                }
                _ => {}
            }
        }
        go(self, &FieldPath::root(), None, &mut f);
    }
}

/// Where each path of the document is: the value's position and, for
/// mapping entries, the key's.
#[derive(Debug, Clone, Default)]
pub struct SourceIndex {
    entries: BTreeMap<FieldPath, (Pos, u32, Option<Pos>)>,
}

impl SourceIndex {
    pub fn build(root: &Node) -> Self {
        let mut entries = BTreeMap::new();
        root.walk(|path, node, key_pos| {
            entries.insert(path.clone(), (node.pos, node.len, key_pos));
        });
        SourceIndex { entries }
    }

    /// The position and length of the value at `path`, or of its nearest
    /// ancestor present in the document (a missing field points at the
    /// mapping that lacks it). For a collection: its key when it has one,
    /// since a mapping "starts" at its first key.
    pub fn locate(&self, path: &FieldPath) -> (Pos, u32) {
        let mut p = Some(path.clone());
        while let Some(cur) = p {
            if let Some((pos, len, key_pos)) = self.entries.get(&cur) {
                return match (len, key_pos) {
                    (0, Some(k)) => (*k, 0),
                    _ => (*pos, *len),
                };
            }
            p = cur.parent();
        }
        (Pos::START, 0)
    }

    /// The position of the key of the entry at `path`, if it has one.
    pub fn key_pos(&self, path: &FieldPath) -> Option<Pos> {
        self.entries.get(path).and_then(|e| e.2)
    }
}

/// A parse failure: what, where, and the path being read when it happened.
#[derive(Debug, Clone)]
pub(crate) struct ParseFailure {
    pub message: String,
    pub pos: Pos,
    pub path: FieldPath,
}

/// serde-saphyr options: strict booleans (only `true`/`false`), a single
/// document, duplicate keys reported by us (with the key's path), and a
/// budget sized for a fleet file, so an alias bomb fails after a bounded
/// amount of work and memory instead of expanding.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_documents: 1,
            max_depth: 32,
            max_nodes: 50_000,
            max_events: 200_000,
            max_aliases: 2_000,
            max_anchors: 2_000,
            max_total_scalar_bytes: 4 << 20,
            max_recorded_anchor_events: 50_000,
            max_recorded_anchor_bytes: 4 << 20,
            max_merge_keys: 1_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 50_000,
            max_replay_stack_depth: 16,
        },
    }
}

thread_local! {
    /// The path the tree builder is in, and the first failure found below
    /// it; serde's error type carries no path, so the builder keeps it here.
    static TRACK: RefCell<Track> = RefCell::new(Track::default());
}

#[derive(Default)]
struct Track {
    path: Vec<Segment>,
    failure: Option<(FieldPath, Option<(String, Pos)>)>,
}

fn note_failure(extra: Option<(String, Pos)>) {
    TRACK.with(|t| {
        let mut t = t.borrow_mut();
        if t.failure.is_none() {
            t.failure = Some((FieldPath(t.path.clone()), extra));
        }
    });
}

fn push(seg: Segment) {
    TRACK.with(|t| t.borrow_mut().path.push(seg));
}

fn pop() {
    TRACK.with(|t| {
        t.borrow_mut().path.pop();
    });
}

/// Parse `text` into a located tree. An empty document is `Null` at 1:1.
pub(crate) fn parse(text: &str) -> Result<Node, ParseFailure> {
    TRACK.with(|t| *t.borrow_mut() = Track::default());
    let result = serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options());
    let track = TRACK.with(|t| std::mem::take(&mut *t.borrow_mut()));
    match result {
        Ok(spanned) => Ok(located(spanned)),
        Err(err) => {
            use serde_saphyr::MessageFormatter;
            let plain = err.without_snippet();
            let saphyr_pos = plain
                .location()
                .map(|l| Pos::from_location(&l))
                .unwrap_or(Pos::START);
            let (path, ours) = track.failure.unwrap_or_default();
            let (message, pos) = match ours {
                Some((message, pos)) => (message, pos),
                None => (
                    serde_saphyr::UserMessageFormatter
                        .format_message(plain)
                        .into_owned(),
                    saphyr_pos,
                ),
            };
            Err(ParseFailure { message, pos, path })
        }
    }
}

fn located(s: Spanned<Node>) -> Node {
    let mut node = s.value;
    node.pos = Pos::from_location(&s.referenced);
    if matches!(node.value, Value::Seq(_) | Value::Map(_)) {
        node.len = 0;
    } else {
        node.len = u32::try_from(s.referenced.span().len()).unwrap_or(0);
    }
    node
}

/// A mapping key: any scalar, as text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a plain key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn leaf(value: Value) -> Node {
            Node {
                value,
                pos: Pos::START,
                len: 0,
            }
        }
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(leaf(Value::Null))
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(leaf(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(leaf(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(leaf(Value::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(leaf(Value::UInt(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(leaf(Value::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(leaf(Value::Str(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(leaf(Value::Str(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                loop {
                    push(Segment::Index(items.len()));
                    let next = seq.next_element::<Spanned<Node>>();
                    if next.is_err() {
                        note_failure(None);
                    }
                    pop();
                    match next? {
                        Some(item) => items.push(located(item)),
                        None => break,
                    }
                }
                Ok(leaf(Value::Seq(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries: Vec<Entry> = Vec::new();
                loop {
                    let key = map.next_key::<Spanned<Key>>();
                    if key.is_err() {
                        note_failure(None);
                    }
                    let Some(key) = key? else { break };
                    let key_pos = Pos::from_location(&key.referenced);
                    let key = key.value.0;
                    push(Segment::Key(key.clone()));
                    if let Some(first) = entries.iter().find(|e| e.key == key) {
                        let message = format!(
                            "duplicate key `{key}` (first defined at line {})",
                            first.key_pos.line
                        );
                        note_failure(Some((message.clone(), key_pos)));
                        pop();
                        return Err(de::Error::custom(message));
                    }
                    let value = map.next_value::<Spanned<Node>>();
                    if value.is_err() {
                        note_failure(None);
                    }
                    pop();
                    entries.push(Entry {
                        key,
                        key_pos,
                        value: located(value?),
                    });
                }
                Ok(leaf(Value::Map(entries)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_records_key_and_value_positions() {
        let root = parse("a: 1\nb:\n  c: [x, \"y\"]\n").unwrap();
        let index = SourceIndex::build(&root);
        let c1 = FieldPath::root().key("b").key("c").index(1);
        assert_eq!(c1.to_string(), "b.c[1]");
        assert_eq!(
            index.locate(&c1),
            (
                Pos {
                    line: 3,
                    column: 10
                },
                3
            )
        );
        assert_eq!(
            index.key_pos(&FieldPath::root().key("b")),
            Some(Pos { line: 2, column: 1 })
        );
        // A missing field points at the nearest present ancestor.
        let missing = FieldPath::root().key("b").key("nope");
        assert_eq!(index.locate(&missing), (Pos { line: 2, column: 1 }, 0));
    }

    #[test]
    fn duplicate_key_reports_the_second_key_and_its_path() {
        let err = parse("a: 1\nb:\n  c: 2\n  c: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos { line: 4, column: 3 });
        assert_eq!(err.path.to_string(), "b.c");
        assert!(err.message.contains("duplicate key `c`"), "{}", err.message);
    }

    #[test]
    fn yes_and_no_stay_strings_under_strict_booleans() {
        let root = parse("a: yes\nb: true\n").unwrap();
        let Value::Map(entries) = root.value else {
            panic!("not a map")
        };
        assert_eq!(entries[0].value.value, Value::Str("yes".into()));
        assert_eq!(entries[1].value.value, Value::Bool(true));
    }
}
