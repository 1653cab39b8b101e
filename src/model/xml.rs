//! The XML writer every libvirt document of hangar is written with.

use std::io;

use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;

/// The XML writer every libvirt document of hangar is written with.
pub type Xw = Writer<Vec<u8>>;

/// The document a writer holds. quick-xml only writes the UTF-8 it is given.
pub fn finish(w: Xw) -> String {
    String::from_utf8(w.into_inner()).expect("quick-xml writes utf-8")
}

/// `<name>value</name>`, the value escaped.
pub fn text(w: &mut Xw, name: &str, value: &str) -> io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(value))?;
    Ok(())
}

/// A standalone document, for `virt-xml-validate` and `hangar render`.
pub fn with_declaration(xml: &str) -> String {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .expect("writing XML into a Vec cannot fail");
    let mut s = finish(w);
    s.push('\n');
    s.push_str(xml);
    s
}
