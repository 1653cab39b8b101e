//! Two host entries that reach one libvirtd (`qemu:///system` and
//! `qemu+unix:///system`, or two names for one remote machine) would each
//! see the other's VMs as moved off their host and delete them on every
//! pass. Only the hosts can tell (their identities come with their facts),
//! so this is a refusal at observation time, before anything is planned.

use std::collections::BTreeMap;

use super::error::{Locator, Problem};
use super::node::FieldPath;
use super::types::Host;
use crate::model::host::{HostFacts, HostIdentity};

/// One problem per host entry that is the same libvirtd as an earlier
/// entry, located at the later entry's `uri` and naming both.
pub(super) fn same_daemon_problems(
    hosts: &[Host],
    facts: &BTreeMap<String, HostFacts>,
    loc: &Locator<'_>,
) -> Vec<Problem> {
    let hosts_path = FieldPath::root().key("spec").key("hosts");
    let mut first: BTreeMap<&HostIdentity, (usize, &Host)> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let Some(identity) = facts.get(&host.name).and_then(|f| f.identity.as_ref()) else {
            continue;
        };
        match first.get(identity) {
            None => {
                first.insert(identity, (i, host));
            }
            Some(&(j, earlier)) => {
                let earlier_line = loc.index.locate(&hosts_path.index(j)).0.line;
                problems.push(loc.at_path(
                    &hosts_path.index(i).key("uri"),
                    format!(
                        "hosts `{}` (line {earlier_line}, {}) and `{}` ({}) are the same libvirtd \
                         ({identity}): each would take the other's VMs for its own; \
                         list the host once",
                        earlier.name, earlier.uri, host.name, host.uri
                    ),
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::load_str;
    use crate::model::host::DomainType;

    fn facts(uuid: &str, daemon: &str) -> HostFacts {
        HostFacts {
            memory_bytes: 8 << 30,
            cpus: 4,
            pool_free_bytes: None,
            domain_type: DomainType::Qemu,
            domain_type_reason: "test".into(),
            identity: Some(HostIdentity {
                uuid: uuid.into(),
                hostname: "build1".into(),
                daemon: daemon.into(),
            }),
            foreign: Default::default(),
        }
    }

    const FLEET: &str = "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: f\nspec:\n  github:\n    simulator: true\n  hosts:\n    - name: local\n      uri: qemu:///system\n    - name: other\n      uri: qemu+unix:///system\n    - name: far\n      uri: qemu+ssh://u@far/system\n  pools:\n    - name: p\n      count: 1\n      vm: {cpus: 1, memory: 1GiB, disk: 10GiB, image: /i}\n";

    #[test]
    fn two_entries_of_one_libvirtd_are_refused_at_the_second_naming_both() {
        let f = load_str("f.yaml", FLEET).unwrap();
        let facts: BTreeMap<String, HostFacts> = [
            ("local".to_string(), facts("u1", "system")),
            ("other".to_string(), facts("u1", "system")),
            ("far".to_string(), facts("u2", "system")),
        ]
        .into();
        let e = f.resolve(&facts, &BTreeMap::new()).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.problems().len(), 1, "{text}");
        let p = &e.problems()[0];
        assert_eq!(
            (p.line, p.path.as_str()),
            (12, "spec.hosts[1].uri"),
            "{text}"
        );
        assert!(
            p.message
                .contains("hosts `local` (line 9, qemu:///system) and `other`"),
            "{text}"
        );
        assert!(p.message.contains("host uuid u1"), "{text}");
    }

    #[test]
    fn one_machine_daemons_of_system_and_of_a_session_are_two_hosts() {
        let f = load_str("f.yaml", FLEET).unwrap();
        let facts: BTreeMap<String, HostFacts> = [
            ("local".to_string(), facts("u1", "system")),
            ("other".to_string(), facts("u1", "session of ci")),
        ]
        .into();
        f.resolve(&facts, &BTreeMap::new()).unwrap();
    }
}
