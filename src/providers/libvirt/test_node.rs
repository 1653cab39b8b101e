//! A libvirt test-driver node file: the sandbox's world on disk, and what a
//! fault point saves of a test-driver host.
//!
//! libvirt's test driver keeps its state in memory, private to the connection
//! that opened `test:///PATH/node.xml`. The sandbox persists itself by writing
//! its domains (with their run state and ownership metadata) and its pool's
//! volumes back into such a file after every change, so the next command
//! starts from where the last one stopped.

use std::io::Cursor;

use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::{Reader, Writer};
use virt::connect::Connect;
use virt::sys;

const TEST_NS: &str = "http://libvirt.org/schemas/domain/test/1.0";

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("libvirt: {0}")]
    Libvirt(#[from] virt::error::Error),
    #[error("xml: {0}")]
    Xml(String),
}

impl From<quick_xml::Error> for NodeError {
    fn from(e: quick_xml::Error) -> Self {
        NodeError::Xml(e.to_string())
    }
}

impl From<std::io::Error> for NodeError {
    fn from(e: std::io::Error) -> Self {
        NodeError::Xml(e.to_string())
    }
}

/// The host the sandbox pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxShape {
    pub cpus: u32,
    pub memory_kib: u64,
}

/// A fresh node file: the host's cpus and memory and one empty dir pool.
pub fn initial(shape: SandboxShape, pool: &str, pool_path: &str) -> Result<String, NodeError> {
    let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    w.write_event(Event::Start(BytesStart::new("node")))?;
    write_cpu(&mut w, shape.cpus)?;
    text_element(&mut w, "memory", &shape.memory_kib.to_string())?;
    let mut p = BytesStart::new("pool");
    p.push_attribute(("type", "dir"));
    w.write_event(Event::Start(p))?;
    text_element(&mut w, "name", pool)?;
    w.write_event(Event::Start(BytesStart::new("target")))?;
    text_element(&mut w, "path", pool_path)?;
    w.write_event(Event::End(BytesEnd::new("target")))?;
    w.write_event(Event::End(BytesEnd::new("pool")))?;
    w.write_event(Event::End(BytesEnd::new("node")))?;
    finish(w)
}

/// Everything the connection holds, as a node file that recreates it.
pub fn dump(conn: &Connect) -> Result<String, NodeError> {
    let info = conn.node_info()?;
    let mut w = Writer::new_with_indent(Cursor::new(Vec::new()), b' ', 2);
    w.write_event(Event::Start(BytesStart::new("node")))?;
    write_cpu(&mut w, info.cpus)?;
    text_element(&mut w, "memory", &info.memory.to_string())?;

    for dom in conn.list_all_domains(0)? {
        let xml = dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE)?;
        // `info()` rather than `state()`: the latter hides errors.
        let runstate = dom.info()?.state.to_raw().to_string();
        copy_with(&mut w, &xml, Some(("xmlns:test", TEST_NS)), |w| {
            text_element(w, "test:runstate", &runstate)
        })?;
    }

    for pool in conn.list_all_storage_pools(0)? {
        let xml = pool.xml_desc(0)?;
        let mut volumes = Vec::new();
        for vol in pool.list_all_volumes(0)? {
            volumes.push(vol.xml_desc(0)?);
        }
        copy_with(&mut w, &xml, None, |w| {
            for v in &volumes {
                copy_with(w, v, None, |_| Ok(()))?;
            }
            Ok(())
        })?;
    }
    w.write_event(Event::End(BytesEnd::new("node")))?;
    finish(w)
}

fn write_cpu(w: &mut Writer<Cursor<Vec<u8>>>, cpus: u32) -> Result<(), NodeError> {
    w.write_event(Event::Start(BytesStart::new("cpu")))?;
    for (name, value) in [
        ("mhz", "2000".to_string()),
        ("nodes", "1".to_string()),
        ("sockets", "1".to_string()),
        ("cores", cpus.to_string()),
        ("threads", "1".to_string()),
        ("active", cpus.to_string()),
        ("model", "sandbox".to_string()),
    ] {
        text_element(w, name, &value)?;
    }
    w.write_event(Event::End(BytesEnd::new("cpu")))?;
    Ok(())
}

fn text_element(w: &mut Writer<Cursor<Vec<u8>>>, name: &str, text: &str) -> Result<(), NodeError> {
    w.write_event(Event::Start(BytesStart::new(name)))?;
    w.write_event(Event::Text(BytesText::new(text)))?;
    w.write_event(Event::End(BytesEnd::new(name)))?;
    Ok(())
}

/// Copy one XML document's root element into `w`, adding an attribute to the
/// root and appending children (through `extra`) before the root closes.
fn copy_with(
    w: &mut Writer<Cursor<Vec<u8>>>,
    xml: &str,
    root_attr: Option<(&str, &str)>,
    extra: impl FnOnce(&mut Writer<Cursor<Vec<u8>>>) -> Result<(), NodeError>,
) -> Result<(), NodeError> {
    let mut r = Reader::from_str(xml);
    r.config_mut().trim_text(true);
    let mut depth = 0usize;
    let mut extra = Some(extra);
    loop {
        match r.read_event()? {
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) | Event::Comment(_) => {}
            Event::Start(mut s) => {
                if depth == 0 {
                    if let Some(attr) = root_attr {
                        s.push_attribute(attr);
                    }
                }
                depth += 1;
                w.write_event(Event::Start(s))?;
            }
            Event::End(e) => {
                depth -= 1;
                if depth == 0 {
                    if let Some(f) = extra.take() {
                        f(w)?;
                    }
                }
                w.write_event(Event::End(e))?;
            }
            other => w.write_event(other)?,
        }
    }
    Ok(())
}

fn finish(w: Writer<Cursor<Vec<u8>>>) -> Result<String, NodeError> {
    let mut s = String::from_utf8(w.into_inner().into_inner())
        .map_err(|e| NodeError::Xml(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> Connect {
        virt::error::clear_error_callback();
        Connect::open(Some(&format!("test://{}", path.display()))).unwrap()
    }

    #[test]
    fn domains_volumes_and_run_state_survive_a_dump_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.xml");
        let shape = SandboxShape {
            cpus: 6,
            memory_kib: 8 * 1024 * 1024,
        };
        std::fs::write(
            &path,
            initial(shape, "default", "/sandbox/default").unwrap(),
        )
        .unwrap();

        let conn = open(&path);
        let xml = r#"<domain type='test'><name>keep-me</name><memory>524288</memory>
            <metadata><h:o xmlns:h="urn:x-test"><slot>s-1</slot></h:o></metadata>
            <os><type>hvm</type></os></domain>"#;
        let running = conn.define_domain_xml(xml).unwrap();
        running.create().unwrap();
        conn.define_domain_xml(&xml.replace("keep-me", "stopped"))
            .unwrap();
        let pool = conn.lookup_storage_pool_by_name("default").unwrap();
        virt::storage_vol::StorageVol::create_xml(
            &pool,
            "<volume><name>v.qcow2</name><capacity unit='G'>1</capacity>\
             <target><format type='qcow2'/></target></volume>",
            0,
        )
        .unwrap();
        std::fs::write(&path, dump(&conn).unwrap()).unwrap();
        drop(conn);

        let again = open(&path);
        assert_eq!(again.node_info().unwrap().cpus, 6);
        let d = again.lookup_domain_by_name("keep-me").unwrap();
        assert!(d.is_active().unwrap());
        assert!(d
            .metadata(
                sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some("urn:x-test"),
                0
            )
            .unwrap()
            .contains("s-1"));
        let s = again.lookup_domain_by_name("stopped").unwrap();
        assert!(!s.is_active().unwrap());
        let pool = again.lookup_storage_pool_by_name("default").unwrap();
        assert_eq!(pool.list_volumes().unwrap(), vec!["v.qcow2".to_string()]);
    }
}
