//! Which domain type and guest CPU a host gets: a pure decision over the
//! host's capabilities (fixtures of a kvm host with vmx, and of this
//! project's machines: kvm offered, no vmx/svm), and what `render domain`
//! prints for `examples/ldmx-umn.yaml` on each.

use std::collections::BTreeMap;

use hangar::model::host::{DomainType, HostFacts};
use hangar::providers::libvirt::{choose_domain_type, DomainTypeChoice};

use super::fixture;

fn auto(caps: &str, expanded: Option<&str>) -> DomainTypeChoice {
    choose_domain_type(&fixture(caps), expanded.map(fixture).as_deref(), None).unwrap()
}

#[test]
fn auto_is_kvm_where_kvm_is_offered_and_the_cpu_has_vmx() {
    let c = auto("caps-kvm-vmx.xml", None);
    assert_eq!(c.domain_type, DomainType::Kvm);
    assert!(c.reason.contains("vmx"), "{}", c.reason);
}

#[test]
fn auto_is_qemu_where_kvm_is_offered_but_the_cpu_has_no_vmx_or_svm() {
    let c = auto("caps-kvm-no-vmx.xml", None);
    assert_eq!(c.domain_type, DomainType::Qemu);
    assert!(c.reason.contains("no vmx/svm"), "{}", c.reason);
}

#[test]
fn svm_inside_a_named_cpu_model_counts_through_the_expanded_baseline() {
    // The capabilities name no svm; the expanded EPYC-Rome model has it.
    let c = auto("caps-kvm-no-vmx.xml", Some("baseline-epyc-expanded.xml"));
    assert_eq!(c.domain_type, DomainType::Kvm);
    assert!(c.reason.contains("svm"), "{}", c.reason);
}

#[test]
fn asked_types_win_and_kvm_without_a_kvm_domain_is_refused() {
    let qemu_only = fixture("caps-kvm-vmx.xml").replace("<domain type='kvm'/>", "");
    let err = choose_domain_type(&qemu_only, None, Some(DomainType::Kvm)).unwrap_err();
    assert!(err.contains("no kvm domain"), "{err}");
    let c = auto_asked("caps-kvm-vmx.xml", DomainType::Qemu);
    assert_eq!(c.domain_type, DomainType::Qemu);
    let c = choose_domain_type(&qemu_only, None, None).unwrap();
    assert_eq!(c.domain_type, DomainType::Qemu);
    assert!(c.reason.contains("offers no kvm"), "{}", c.reason);
}

fn auto_asked(caps: &str, asked: DomainType) -> DomainTypeChoice {
    choose_domain_type(&fixture(caps), None, Some(asked)).unwrap()
}

/// `hangar render domain` of the example's first slot on a host whose
/// facts carry `choice`.
fn render_example(choice: &DomainTypeChoice) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ldmx-umn.yaml");
    let fleet = hangar::fleet::load_str(path, &std::fs::read_to_string(path).unwrap()).unwrap();
    let facts = HostFacts {
        memory_bytes: 256 << 30,
        cpus: 32,
        pool_free_bytes: Some(4 << 40),
        domain_type: choice.domain_type,
        domain_type_reason: choice.reason.clone(),
        identity: None,
        foreign: Default::default(),
    };
    let host = fleet.fleet.spec.hosts[0].name.clone();
    let desired = fleet
        .resolve(&BTreeMap::from([(host, facts.clone())]), &BTreeMap::new())
        .unwrap();
    hangar::assemble::render(&fleet, &desired.slots[0], true, Some(&facts)).unwrap()
}

#[test]
fn render_domain_on_a_kvm_host_with_vmx_is_kvm_with_the_host_cpu() {
    let xml = render_example(&auto("caps-kvm-vmx.xml", None));
    assert!(xml.contains(r#"<domain type="kvm">"#), "{xml}");
    assert!(xml.contains(r#"<cpu mode="host-passthrough"/>"#), "{xml}");
    assert!(
        xml.contains("<!-- domain type kvm: auto: the host offers kvm and its CPU has vmx -->"),
        "{xml}"
    );
}

#[test]
fn render_domain_here_is_qemu_with_the_max_cpu_and_says_why() {
    let xml = render_example(&auto("caps-kvm-no-vmx.xml", None));
    assert!(xml.contains(r#"<domain type="qemu">"#), "{xml}");
    assert!(xml.contains(r#"<cpu mode="maximum"/>"#), "{xml}");
    assert!(xml.contains("no hardware virtualisation"), "{xml}");
}

#[test]
fn cpu_model_host_model_is_honoured_under_kvm_and_changes_the_slot() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ldmx-umn.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let with = text.replacen(
        "        cpus: 2\n",
        "        cpus: 2\n        cpuModel: host-model\n",
        1,
    );
    assert_ne!(with, text, "the example's vm block moved");
    let choice = auto("caps-kvm-vmx.xml", None);
    let facts = HostFacts {
        memory_bytes: 256 << 30,
        cpus: 32,
        pool_free_bytes: None,
        domain_type: choice.domain_type,
        domain_type_reason: choice.reason.clone(),
        identity: None,
        foreign: Default::default(),
    };
    let hash_and_xml = |text: &str| {
        let fleet = hangar::fleet::load_str(path, text).unwrap();
        let host = fleet.fleet.spec.hosts[0].name.clone();
        let d = fleet
            .resolve(&BTreeMap::from([(host, facts.clone())]), &BTreeMap::new())
            .unwrap();
        let xml = hangar::assemble::render(&fleet, &d.slots[0], true, Some(&facts)).unwrap();
        (d.slots[0].spec_hash.clone(), xml)
    };
    let (plain_hash, _) = hash_and_xml(&text);
    let (hash, xml) = hash_and_xml(&with);
    assert!(xml.contains(r#"<cpu mode="host-model"/>"#), "{xml}");
    assert_ne!(hash, plain_hash, "a new cpu model needs a new VM");
}
