//! Storage volume XML: what hangar creates in a pool, and the facts it
//! reads back (path, format, capacity, backing file).

use std::io;

use quick_xml::events::BytesText;
use quick_xml::Writer;

use crate::model::tree;
use crate::model::xml::{finish, text, Xw};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFormat {
    Qcow2,
    Raw,
}

impl VolumeFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeFormat::Qcow2 => "qcow2",
            VolumeFormat::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<VolumeFormat> {
        match s {
            "qcow2" => Some(VolumeFormat::Qcow2),
            "raw" | "iso" => Some(VolumeFormat::Raw),
            _ => None,
        }
    }
}

/// A volume to create in a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub capacity_bytes: u64,
    pub format: VolumeFormat,
    /// Copy-on-write backing file (qcow2 overlays only).
    pub backing: Option<Backing>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    pub path: String,
    pub format: VolumeFormat,
}

/// Libvirt storage volume XML for `spec`.
pub fn volume_xml(spec: &VolumeSpec) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_volume(&mut w, spec).expect("writing XML into a Vec cannot fail");
    finish(w)
}

fn write_volume(w: &mut Xw, spec: &VolumeSpec) -> io::Result<()> {
    w.create_element("volume")
        .with_attribute(("type", "file"))
        .write_inner_content(|w| {
            text(w, "name", &spec.name)?;
            w.create_element("capacity")
                .with_attribute(("unit", "bytes"))
                .write_text_content(BytesText::new(&spec.capacity_bytes.to_string()))?;
            // Sparse: qcow2 grows on use, the seed is written by upload.
            w.create_element("allocation")
                .with_attribute(("unit", "bytes"))
                .write_text_content(BytesText::new("0"))?;
            w.create_element("target").write_inner_content(|w| {
                w.create_element("format")
                    .with_attribute(("type", spec.format.as_str()))
                    .write_empty()?;
                if spec.format == VolumeFormat::Qcow2 {
                    text(w, "compat", "1.1")?;
                }
                Ok(())
            })?;
            if let Some(backing) = &spec.backing {
                w.create_element("backingStore").write_inner_content(|w| {
                    text(w, "path", &backing.path)?;
                    w.create_element("format")
                        .with_attribute(("type", backing.format.as_str()))
                        .write_empty()?;
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    Ok(())
}

/// What hangar reads from a volume's XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFacts {
    pub path: Option<String>,
    pub format: Option<String>,
    pub capacity_bytes: Option<u64>,
    pub backing_path: Option<String>,
}

pub fn parse_volume(xml: &str) -> Result<VolumeFacts, String> {
    let root = tree::parse(xml)?;
    let target = root.child("target");
    let capacity_bytes = match root.child("capacity") {
        Some(c) => Some(to_bytes(c.text.trim(), c.attr("unit").unwrap_or("bytes"))?),
        None => None,
    };
    Ok(VolumeFacts {
        path: target
            .and_then(|t| t.child_text("path"))
            .map(str::to_string),
        format: target
            .and_then(|t| t.child("format"))
            .and_then(|f| f.attr("type"))
            .map(str::to_string),
        capacity_bytes,
        backing_path: root
            .child("backingStore")
            .and_then(|b| b.child_text("path"))
            .map(str::to_string),
    })
}

/// A libvirt `<capacity>`/`<memory>` value in `unit`, in bytes.
pub(crate) fn to_bytes(value: &str, unit: &str) -> Result<u64, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| format!("capacity {value:?} is not a number"))?;
    let mul: u64 = match unit {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1000 * 1000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1000 * 1000 * 1000,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        other => return Err(format!("unknown unit {other:?}")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| "capacity overflows".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_units_are_converted() {
        let v = parse_volume(
            "<volume><capacity unit='KiB'>4</capacity><target><path>/p/v</path><format type='qcow2'/></target>\
             <backingStore><path>/p/base</path></backingStore></volume>",
        )
        .unwrap();
        assert_eq!(v.capacity_bytes, Some(4096));
        assert_eq!(v.format.as_deref(), Some("qcow2"));
        assert_eq!(v.backing_path.as_deref(), Some("/p/base"));
    }
}
