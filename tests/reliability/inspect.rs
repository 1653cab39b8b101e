//! What libvirt and the simulator hold, read independently of the engine,
//! and the invariants every scenario checks afterwards: one domain per slot,
//! no volume that no domain explains, no registration without its VM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hangar::model::ownership::Ownership;
use hangar::providers::libvirt::xml::parse_domain;
use hangar::sim::{SimRunner, SimWorld};
use virt::connect::Connect;

/// One domain as libvirt holds it.
#[derive(Debug, Clone)]
pub struct Dom {
    pub name: String,
    pub active: bool,
    pub owner: Option<Ownership>,
    /// (pool, volume) of its disks.
    pub disks: Vec<(String, String)>,
    /// Inactive XML, secure parts included.
    pub xml: String,
}

/// A host's domains and its pool's volumes.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub domains: Vec<Dom>,
    /// Volume name → XML.
    pub volumes: BTreeMap<String, String>,
}

pub fn view(conn: &Connect, pool: &str) -> NodeView {
    let mut domains = Vec::new();
    for d in conn.list_all_domains(0).expect("list domains") {
        let xml = d
            .xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE | virt::sys::VIR_DOMAIN_XML_SECURE)
            .expect("domain xml");
        let facts = parse_domain(&xml).expect("parse domain xml");
        domains.push(Dom {
            name: d.name().expect("domain name"),
            active: d.is_active().expect("domain state"),
            owner: facts.owner,
            disks: facts.volumes,
            xml,
        });
    }
    domains.sort_by(|a, b| a.name.cmp(&b.name));
    let pool = conn
        .lookup_storage_pool_by_name(pool)
        .expect("storage pool");
    let volumes = pool
        .list_all_volumes(0)
        .expect("list volumes")
        .into_iter()
        .map(|v| (v.name().unwrap(), v.xml_desc(0).unwrap()))
        .collect();
    NodeView { domains, volumes }
}

/// A sandbox host's state as the next hangar process will load it.
pub fn node_file(path: &Path, pool: &str) -> NodeView {
    if !path.exists() {
        return NodeView::default();
    }
    virt::error::clear_error_callback();
    let conn = Connect::open(Some(&format!("test://{}", path.display())))
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    view(&conn, pool)
}

impl NodeView {
    /// Domains of `fleet`, by slot.
    pub fn ours(&self, fleet: &str) -> BTreeMap<String, Vec<&Dom>> {
        let mut out: BTreeMap<String, Vec<&Dom>> = BTreeMap::new();
        for d in &self.domains {
            if let Some(o) = d.owner.as_ref().filter(|o| o.fleet == fleet) {
                out.entry(o.slot.clone()).or_default().push(d);
            }
        }
        out
    }

    pub fn dom(&self, name: &str) -> Option<&Dom> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// Volumes named like the fleet's (`<fleet>-…`) that no domain uses and
    /// that are not the cache of a slot in `slots`.
    pub fn leaked_volumes(&self, fleet: &str, slots: &BTreeSet<String>) -> Vec<String> {
        let used: BTreeSet<&str> = self
            .domains
            .iter()
            .flat_map(|d| d.disks.iter().map(|(_, v)| v.as_str()))
            .collect();
        self.volumes
            .keys()
            .filter(|v| v.starts_with(&format!("{fleet}-")))
            .filter(|v| !used.contains(v.as_str()))
            .filter(|v| {
                !slots
                    .iter()
                    .any(|s| v.as_str() == format!("{s}-cache.qcow2"))
            })
            .cloned()
            .collect()
    }
}

/// Runners of one scope of a simulator world.
pub fn runners(world: &SimWorld, scope: &str) -> Vec<SimRunner> {
    let key = hangar::sim::scope_key(scope).expect("scope");
    world
        .scope(&key)
        .map(|s| s.runners.values().cloned().collect())
        .unwrap_or_default()
}

/// The simulator's state file, as the next process loads it.
pub fn sim_file(path: &Path) -> SimWorld {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).expect("simulator state"),
        Err(_) => SimWorld::default(),
    }
}

/// The invariants of a converged fleet: every slot in `slots` has exactly
/// one domain of the fleet across `hosts`, running; no domain of the fleet
/// outside `slots`; no leaked volume; exactly one registration per slot and
/// none for anything else of the fleet.
pub fn assert_converged(
    what: &str,
    fleet: &str,
    hosts: &[&NodeView],
    runners: &[SimRunner],
    slots: &BTreeSet<String>,
) {
    let mut by_slot: BTreeMap<String, usize> = BTreeMap::new();
    for h in hosts {
        for (slot, doms) in h.ours(fleet) {
            *by_slot.entry(slot.clone()).or_default() += doms.len();
            for d in doms {
                assert!(d.active, "{what}: domain {} is not running", d.name);
            }
        }
        let leaked = h.leaked_volumes(fleet, slots);
        assert!(leaked.is_empty(), "{what}: leaked volumes {leaked:?}");
    }
    for s in slots {
        assert_eq!(
            by_slot.get(s).copied().unwrap_or(0),
            1,
            "{what}: slot {s} must have exactly one domain; domains: {by_slot:?}"
        );
    }
    let extra: Vec<&String> = by_slot.keys().filter(|s| !slots.contains(*s)).collect();
    assert!(extra.is_empty(), "{what}: domains of no slot: {extra:?}");
    let label = format!("hangar-{fleet}");
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runners
        .iter()
        .filter(|r| r.labels.iter().any(|l| l.name == label))
    {
        *names.entry(r.name.as_str()).or_default() += 1;
    }
    for s in slots {
        assert_eq!(
            names.get(s.as_str()).copied().unwrap_or(0),
            1,
            "{what}: slot {s} must have exactly one registration; runners: {names:?}"
        );
    }
    let stray: Vec<&&str> = names.keys().filter(|n| !slots.contains(**n)).collect();
    assert!(
        stray.is_empty(),
        "{what}: registrations of no slot: {stray:?}"
    );
}
