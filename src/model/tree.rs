//! A small element tree read with quick-xml, enough to query the XML libvirt
//! hands back (domain, volume, capabilities). Names keep their prefix;
//! lookups go by local name.

use quick_xml::escape::resolve_predefined_entity;
use std::io;

use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Qualified name as written (`hangar:vm`).
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// Concatenated text directly inside this element.
    pub text: String,
}

impl Element {
    pub fn local_name(&self) -> &str {
        self.name.rsplit(':').next().unwrap_or(&self.name)
    }

    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.local_name() == local)
    }

    pub fn children_named<'a>(&'a self, local: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children
            .iter()
            .filter(move |c| c.local_name() == local)
    }

    /// Serialize again (text that is only whitespace is dropped; the
    /// writer indents).
    pub fn to_xml(&self) -> String {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
        self.write(&mut w)
            .expect("writing XML into a Vec cannot fail");
        String::from_utf8(w.into_inner()).expect("quick-xml writes utf-8")
    }

    fn write(&self, w: &mut Writer<Vec<u8>>) -> io::Result<()> {
        let el = w
            .create_element(self.name.as_str())
            .with_attributes(self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let text = self.text.trim();
        if self.children.is_empty() && text.is_empty() {
            el.write_empty()?;
        } else if self.children.is_empty() {
            el.write_text_content(BytesText::new(text))?;
        } else {
            el.write_inner_content(|w| {
                if !text.is_empty() {
                    w.write_event(Event::Text(BytesText::new(text)))?;
                }
                for c in &self.children {
                    c.write(w)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Text of a child element, trimmed.
    pub fn child_text(&self, local: &str) -> Option<&str> {
        self.child(local).map(|c| c.text.trim())
    }
}

fn start(e: &BytesStart<'_>) -> Result<Element, String> {
    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| format!("bad attribute: {err}"))?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a
            .unescape_value()
            .map_err(|err| format!("bad attribute value: {err}"))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        ..Element::default()
    })
}

/// Parse a document into its root element.
pub fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("xml at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => stack.push(start(&e)?),
            Event::Empty(e) => {
                let el = start(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let el = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let s = t.decode().map_err(|e| format!("bad text: {e}"))?;
                    top.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    if let Some(c) = r
                        .resolve_char_ref()
                        .map_err(|e| format!("bad character reference: {e}"))?
                    {
                        top.text.push(c);
                    } else {
                        let name = r.decode().map_err(|e| format!("bad reference: {e}"))?;
                        let resolved = resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?;
                        top.text.push_str(resolved);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("unclosed element".into());
    }
    root.ok_or_else(|| "empty document".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_prefixes_are_resolved() {
        let root =
            parse(r#"<a xmlns:h="urn:x"><h:b k="1 &amp; 2">x &lt; y &#65;</h:b><c/></a>"#).unwrap();
        let b = root.child("b").unwrap();
        assert_eq!(b.name, "h:b");
        assert_eq!(b.attr("k"), Some("1 & 2"));
        assert_eq!(b.text, "x < y A");
        assert!(root.child("c").is_some());
        // Serializing again keeps names, attributes and text (escaped).
        let again = parse(&root.to_xml()).unwrap();
        assert_eq!(again.child("b"), root.child("b"));
        assert_eq!(again.to_xml(), root.to_xml());
    }

    #[test]
    fn broken_documents_are_errors() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("").is_err());
    }
}
