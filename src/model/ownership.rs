//! Ownership: what hangar writes into every domain it defines, and its XML
//! codec (the `<metadata>` element in hangar's own namespace).

use std::fmt;
use std::io;

use chrono::{DateTime, Utc};
use quick_xml::Writer;
use serde::{Deserialize, Serialize};

use super::tree::Element;
use super::xml::{finish, text, Xw};

/// Hash of everything in a slot's spec that needs a new VM when it changes.
/// Hex, 16 characters; stored in each VM's ownership metadata.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecHash(pub String);

impl SpecHash {
    /// This hash with `extra` folded in: what the fleet file says plus what
    /// it resolved to (the release `runner.version: latest` named).
    pub fn with(&self, extra: &str) -> SpecHash {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}\0{extra}", self.0).as_bytes());
        SpecHash(hex::encode(digest)[..16].to_string())
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The VM a slot asks for, in absolute units. Recorded in ownership metadata
/// so that `diff` can say what changed (`cpus 2 → 4`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmShape {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Base image: a path on the host or a volume name in the host's pool.
    pub image: String,
    /// Size of the slot's private cache volume, if the pool has one.
    pub cache_bytes: Option<u64>,
}

/// What hangar writes into every domain it defines, in its own XML namespace.
/// A domain without it is not ours and is invisible to the planner. It never
/// changes under one domain UUID: a new generation is a new domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ownership {
    pub fleet: String,
    pub pool: String,
    /// Slot name (= VM name = runner name).
    pub slot: String,
    pub index: u32,
    /// 1 for a slot's first VM, +1 for each replacement.
    pub generation: u64,
    pub spec_hash: SpecHash,
    pub created_at: DateTime<Utc>,
    pub ephemeral: bool,
    /// How many VMs of this slot in a row failed to bring their runner up
    /// before this one was created; drives the crash-loop backoff.
    pub boot_failures: u32,
    pub shape: VmShape,
}

/// Namespace of hangar's ownership element inside a domain's `<metadata>`.
pub const OWNERSHIP_NS: &str = "https://hangar.dev/xmlns/vm/1";
/// Prefix written for [`OWNERSHIP_NS`] (any prefix is accepted on read).
pub const OWNERSHIP_PREFIX: &str = "hangar";
/// Local name of the ownership element.
pub const OWNERSHIP_ELEMENT: &str = "vm";

pub fn write_ownership(w: &mut Xw, o: &Ownership) -> io::Result<()> {
    let p = |local: &str| format!("{OWNERSHIP_PREFIX}:{local}");
    let xmlns = format!("xmlns:{OWNERSHIP_PREFIX}");
    w.create_element(p(OWNERSHIP_ELEMENT))
        .with_attribute((xmlns.as_str(), OWNERSHIP_NS))
        .write_inner_content(|w| {
            text(w, &p("fleet"), &o.fleet)?;
            text(w, &p("pool"), &o.pool)?;
            text(w, &p("slot"), &o.slot)?;
            text(w, &p("index"), &o.index.to_string())?;
            text(w, &p("generation"), &o.generation.to_string())?;
            text(w, &p("specHash"), &o.spec_hash.0)?;
            text(w, &p("createdAt"), &o.created_at.to_rfc3339())?;
            text(
                w,
                &p("ephemeral"),
                if o.ephemeral { "true" } else { "false" },
            )?;
            text(w, &p("bootFailures"), &o.boot_failures.to_string())?;
            w.create_element(p("shape")).write_inner_content(|w| {
                text(w, &p("cpus"), &o.shape.cpus.to_string())?;
                text(w, &p("memoryBytes"), &o.shape.memory_bytes.to_string())?;
                text(w, &p("diskBytes"), &o.shape.disk_bytes.to_string())?;
                text(w, &p("image"), &o.shape.image)?;
                if let Some(cache) = o.shape.cache_bytes {
                    text(w, &p("cacheBytes"), &cache.to_string())?;
                }
                Ok(())
            })?;
            Ok(())
        })?;
    Ok(())
}

/// The ownership element alone (what `virsh metadata` shows).
pub fn ownership_xml(o: &Ownership) -> String {
    let mut w = Writer::new(Vec::new());
    write_ownership(&mut w, o).expect("writing XML into a Vec cannot fail");
    finish(w)
}

/// Why an ownership element could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ownership metadata: {0}")]
pub struct OwnershipError(pub String);

fn field<'a>(el: &'a Element, name: &str) -> Result<&'a str, OwnershipError> {
    el.child_text(name)
        .ok_or_else(|| OwnershipError(format!("missing {name}")))
}

fn number<T: std::str::FromStr>(el: &Element, name: &str) -> Result<T, OwnershipError> {
    field(el, name)?
        .parse()
        .map_err(|_| OwnershipError(format!("{name} is not a number")))
}

pub fn parse_ownership_element(el: &Element) -> Result<Ownership, OwnershipError> {
    let created_at = DateTime::parse_from_rfc3339(field(el, "createdAt")?)
        .map_err(|_| OwnershipError("createdAt is not rfc3339".into()))?
        .with_timezone(&Utc);
    let ephemeral = match field(el, "ephemeral")? {
        "true" => true,
        "false" => false,
        _ => return Err(OwnershipError("ephemeral is not a boolean".into())),
    };
    let shape_el = el
        .child("shape")
        .ok_or_else(|| OwnershipError("missing shape".into()))?;
    let cache_bytes = match shape_el.child_text("cacheBytes") {
        Some(v) => Some(
            v.parse()
                .map_err(|_| OwnershipError("cacheBytes is not a number".into()))?,
        ),
        None => None,
    };
    Ok(Ownership {
        fleet: field(el, "fleet")?.to_string(),
        pool: field(el, "pool")?.to_string(),
        slot: field(el, "slot")?.to_string(),
        index: number(el, "index")?,
        generation: number(el, "generation")?,
        spec_hash: SpecHash(field(el, "specHash")?.to_string()),
        created_at,
        ephemeral,
        boot_failures: number(el, "bootFailures")?,
        shape: VmShape {
            cpus: number(shape_el, "cpus")?,
            memory_bytes: number(shape_el, "memoryBytes")?,
            disk_bytes: number(shape_el, "diskBytes")?,
            image: field(shape_el, "image")?.to_string(),
            cache_bytes,
        },
    })
}
