//! Typed deserialization over the located tree. Every error leaves here with
//! the position and field path of the node it is about: the innermost node
//! that fails stamps the error, outer nodes leave it alone.

use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::forward_to_deserialize_any;

use super::node::{Entry, FieldPath, Node, Pos, Value};

#[derive(Debug, Clone)]
pub(crate) struct DeError {
    pub message: String,
    pub at: Option<(Pos, u32, FieldPath)>,
}

impl DeError {
    fn stamp(mut self, pos: Pos, len: u32, path: &FieldPath) -> Self {
        if self.at.is_none() {
            self.at = Some((pos, len, path.clone()));
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            at: None,
        }
    }

    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        let found = match unexp {
            de::Unexpected::Unit => "null".to_string(),
            de::Unexpected::Str(s) => format!("string `{s}`"),
            other => other.to_string(),
        };
        DeError::custom(format_args!(
            "expected {}, found {found}",
            plain_expected(exp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        de::Error::invalid_type(unexp, exp)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::custom(format_args!(
            "unknown field `{field}`, expected {}",
            one_of(expected)
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::custom(format_args!(
            "unknown value `{variant}`, expected {}",
            one_of(expected)
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::custom(format_args!("missing field `{field}`"))
    }
}

/// serde names primitive targets after Rust types; say what the file needs.
fn plain_expected(exp: &dyn de::Expected) -> String {
    let exp = exp.to_string();
    match exp.as_str() {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number, 0 or more".to_string(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_string(),
        "f32" | "f64" => "a number".to_string(),
        _ => exp,
    }
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => "nothing here".to_string(),
        [one] => format!("`{one}`"),
        _ => {
            let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            format!("one of {}", quoted.join(", "))
        }
    }
}

/// Deserialize `T` from the tree rooted at `node`.
pub(crate) fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, DeError> {
    T::deserialize(NodeDe {
        node,
        path: FieldPath::root(),
    })
}

struct NodeDe<'de> {
    node: &'de Node,
    path: FieldPath,
}

impl<'de> NodeDe<'de> {
    fn stamp<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.stamp(self.node.pos, self.node.len, &self.path))
    }

    fn any<V: Visitor<'de>>(&self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                index: 0,
                path: &self.path,
            }),
            Value::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                current: None,
                path: &self.path,
            }),
        }
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = self.any(visitor);
        self.stamp(r)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(NodeDe {
                node: self.node,
                path: self.path.clone(),
            }),
        };
        self.stamp(r)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = visitor.visit_newtype_struct(NodeDe {
            node: self.node,
            path: self.path.clone(),
        });
        self.stamp(r)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Str(s) => visitor.visit_enum(UnitVariant(s)),
            other => Err(de::Error::custom(format_args!(
                "expected {}, found {}",
                visitor_expecting(&visitor),
                other.kind()
            ))),
        };
        self.stamp(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // Derived structs also accept a list of fields by position; a fleet
        // file never means that.
        let r = match &self.node.value {
            Value::Map(_) => self.any(visitor),
            other => Err(de::Error::custom(format_args!(
                "expected a mapping ({}), found {}",
                visitor_expecting(&visitor),
                other.kind()
            ))),
        };
        self.stamp(r)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
    }
}

fn visitor_expecting<'de, V: Visitor<'de>>(visitor: &V) -> String {
    struct Expecting<'v, V>(&'v V);
    impl<'de, V: Visitor<'de>> fmt::Display for Expecting<'_, V> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.expecting(f)
        }
    }
    Expecting(visitor).to_string()
}

struct Seq<'de, 'p> {
    items: std::slice::Iter<'de, Node>,
    index: usize,
    path: &'p FieldPath,
}

impl<'de> SeqAccess<'de> for Seq<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = self.path.index(self.index);
        self.index += 1;
        let de = NodeDe { node, path };
        let r = seed.deserialize(NodeDe {
            node,
            path: de.path.clone(),
        });
        de.stamp(r).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct Map<'de, 'p> {
    entries: std::slice::Iter<'de, Entry>,
    current: Option<&'de Entry>,
    path: &'p FieldPath,
}

impl<'de> MapAccess<'de> for Map<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some(entry);
        let len = u32::try_from(entry.key.chars().count()).unwrap_or(0);
        seed.deserialize(KeyDe(&entry.key))
            .map(Some)
            .map_err(|e| e.stamp(entry.key_pos, len, &self.path.key(&entry.key)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self
            .current
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value requested before its key"))?;
        let de = NodeDe {
            node: &entry.value,
            path: self.path.key(&entry.key),
        };
        let r = seed.deserialize(NodeDe {
            node: &entry.value,
            path: de.path.clone(),
        });
        de.stamp(r)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct KeyDe<'de>(&'de str);

impl<'de> de::Deserializer<'de> for KeyDe<'de> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_borrowed_str(self.0)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct UnitVariant<'de>(&'de str);

impl<'de> EnumAccess<'de> for UnitVariant<'de> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), DeError> {
        seed.deserialize(KeyDe(self.0)).map(|v| (v, self))
    }
}

impl<'de> VariantAccess<'de> for UnitVariant<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, DeError> {
        Err(de::Error::custom(format_args!(
            "`{}` needs a value here",
            self.0
        )))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, DeError> {
        Err(de::Error::custom(format_args!(
            "`{}` needs a value here",
            self.0
        )))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        Err(de::Error::custom(format_args!(
            "`{}` needs a value here",
            self.0
        )))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::super::node::parse;
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Outer {
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        name: String,
        #[serde(default)]
        count: u32,
    }

    fn err(text: &str) -> (String, Pos, String) {
        let root = parse(text).unwrap();
        let e = from_node::<Outer>(&root).unwrap_err();
        let (pos, _, path) = e.at.unwrap();
        (e.message, pos, path.to_string())
    }

    #[test]
    fn a_well_formed_tree_deserializes_with_defaults() {
        let root = parse("items:\n  - name: a\n  - {name: b, count: 3}\n").unwrap();
        let outer: Outer = from_node(&root).unwrap();
        let got: Vec<(&str, u32)> = outer
            .items
            .iter()
            .map(|i| (i.name.as_str(), i.count))
            .collect();
        assert_eq!(got, [("a", 0), ("b", 3)]);
    }

    #[test]
    fn errors_carry_the_path_and_position_of_the_offending_node() {
        let (msg, pos, path) = err("items:\n  - name: a\n    count: lots\n");
        assert_eq!(path, "items[0].count");
        assert_eq!(
            pos,
            Pos {
                line: 3,
                column: 12
            }
        );
        assert!(msg.contains("found string `lots`"), "{msg}");

        let (msg, pos, path) = err("items:\n  - name: a\n    colour: red\n");
        assert_eq!(path, "items[0].colour");
        assert_eq!(pos, Pos { line: 3, column: 5 });
        assert!(msg.starts_with("unknown field `colour`"), "{msg}");

        let (msg, pos, path) = err("items:\n  - count: 1\n");
        assert_eq!(path, "items[0]");
        assert_eq!(pos, Pos { line: 2, column: 5 });
        assert_eq!(msg, "missing field `name`");
    }
}
