//! The libvirt provider on libvirt's test driver: each test opens its own
//! `test:///<tempdir>/node.xml` (private to its connection), holding host
//! facts, a dir pool with a base image, and foreign domains and volumes —
//! some named like ours — that must come out untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use hangar::model::guest::GuestStage;
use hangar::model::guest::{MARKER_DOCKER_OK, MARKER_USER_OK};
use hangar::model::host::{DirectBoot, DomainType, NetworkAttachment};
use hangar::model::ownership::Ownership;
use hangar::plan::model::{ForeignUse, VmRef, VmState};
use hangar::providers::libvirt::xml::{self, DomainSpec, VolumeFormat, VolumeSpec};
use hangar::providers::libvirt::LibvirtHost;
use hangar::providers::{ErrorKind, Hypervisor, VmCreate};
use virt::connect::Connect;
use virt::storage_pool::StoragePool;

#[path = "libvirt_cases/domain_type.rs"]
mod domain_type;
#[path = "kit/host.rs"]
mod kit;
#[path = "libvirt_cases/runner_volume.rs"]
mod runner_volume;

const POOL: &str = kit::NODE_POOL;
const FLEET: &str = "ci";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/libvirt")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Node {
    _dir: tempfile::TempDir,
    host: LibvirtHost,
}

impl Node {
    fn new() -> Node {
        Node::with_type(None).unwrap()
    }

    fn with_type(
        domain_type: Option<DomainType>,
    ) -> Result<Node, hangar::providers::ProviderError> {
        let (dir, host) = kit::test_node(domain_type)?;
        Ok(Node { _dir: dir, host })
    }

    /// A node holding our VM of slot `index` (generation 1, no cache), and
    /// the VM as observed.
    async fn with_vm(index: u32) -> (Node, hangar::plan::model::ObservedVm) {
        let n = Node::new();
        let o = owner(index, 1, None);
        n.host.create(&vm(o.clone())).await.unwrap();
        let v = n.host.observe(FLEET).await.unwrap().remove(0);
        (n, v)
    }

    fn conn(&self) -> std::sync::Arc<Connect> {
        self.host.connection().unwrap()
    }

    fn pool(&self) -> StoragePool {
        self.conn().lookup_storage_pool_by_name(POOL).unwrap()
    }

    fn volumes(&self) -> Vec<String> {
        let pool = self.pool();
        pool.refresh(0).unwrap();
        let mut v = pool.list_volumes().unwrap();
        v.sort();
        v
    }

    /// Name → (active, inactive XML) of every domain.
    fn domains(&self) -> BTreeMap<String, (bool, String)> {
        self.conn()
            .list_all_domains(0)
            .unwrap()
            .into_iter()
            .map(|d| {
                (
                    d.name().unwrap(),
                    (
                        d.is_active().unwrap(),
                        d.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE).unwrap(),
                    ),
                )
            })
            .collect()
    }

    fn foreign(&self) -> (BTreeMap<String, (bool, String)>, Vec<String>) {
        let doms = self
            .domains()
            .into_iter()
            .filter(|(_, (_, x))| !x.contains(hangar::model::ownership::OWNERSHIP_NS))
            .collect();
        let vols = self
            .volumes()
            .into_iter()
            .filter(|v| FOREIGN_VOLUMES.contains(&v.as_str()))
            .collect();
        (doms, vols)
    }
}

const FOREIGN_DOMAINS: [&str; 3] = ["ci-linux-7", "legacy-builder", "ci-linux-0-old"];
const FOREIGN_VOLUMES: [&str; 4] = [
    "ci-linux-0.qcow2",
    "ci-linux-7-cache.qcow2",
    "ci-linux-3-g1-root.qcow2",
    "notes.raw",
];

fn owner(index: u32, generation: u64, cache: Option<u64>) -> Ownership {
    let shape = kit::node_vm(cache);
    kit::ownership(FLEET, "linux", index, generation, kit::fixed_time(), shape)
}

fn vm(owner: Ownership) -> VmCreate {
    kit::vm_create(owner, NetworkAttachment::User, "ghs_canary_secret")
}

fn vm_ref(host: &LibvirtHost, o: &Ownership, uuid: &str) -> VmRef {
    VmRef {
        name: o.slot.clone(),
        uuid: uuid.into(),
        host: host.host().into(),
        generation: o.generation,
    }
}

#[tokio::test]
async fn facts_come_from_the_node_and_the_pool() {
    let n = Node::new();
    let f = n.host.facts().await.unwrap();
    assert_eq!(f.cpus, 6);
    assert_eq!(f.memory_bytes, 8_388_608 * 1024);
    // The test driver computes free space from its volumes, as a real pool does.
    let available = n.pool().info().unwrap().available;
    assert!(available > 0 && available < 107_374_182_400);
    assert_eq!(f.pool_free_bytes, Some(available));
    assert_eq!(f.domain_type, DomainType::Test);
    assert!(f.domain_type_reason.contains("test driver"));
}

#[test]
fn asking_for_kvm_on_the_test_driver_is_refused() {
    let err = Node::with_type(Some(DomainType::Kvm)).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert_eq!(err.target, "testhost");
}

#[tokio::test]
async fn create_then_observe_round_trips_ownership_and_hides_foreign_domains() {
    let n = Node::new();
    let before = n.foreign();
    let o = owner(0, 1, Some(8 << 30));
    n.host.create(&vm(o.clone())).await.unwrap();

    let seen = n.host.observe(FLEET).await.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let v = &seen[0];
    assert_eq!(v.name, "ci-linux-0");
    assert_eq!(v.owner, o);
    assert_eq!(v.state, VmState::Running);
    assert!(v.seed_attached);
    assert_eq!(v.guest, Some(GuestStage::Booting));
    assert_eq!(v.host, "testhost");
    assert!(n.host.observe("other-fleet").await.unwrap().is_empty());

    // Volumes by their deterministic names; nothing secret in the domain.
    let vols = n.volumes();
    for name in [
        "ci-linux-0-g1-root.qcow2",
        "ci-linux-0-cache.qcow2",
        "ci-linux-0-g1-seed.iso",
    ] {
        assert!(vols.iter().any(|v| v == name), "{name} missing in {vols:?}");
    }
    let (_, dom_xml) = &n.domains()["ci-linux-0"];
    assert!(!dom_xml.contains("ghs_canary_secret"));
    assert!(dom_xml.contains("hangar-cache") && dom_xml.contains("hangar-seed"));

    // Guest progress from the console log.
    let log = n.host.console_log_path("ci-linux-0", 1);
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(
        &log,
        format!("[ 1.0] boot\n{MARKER_USER_OK}\n{MARKER_DOCKER_OK}\n"),
    )
    .unwrap();
    let seen = n.host.observe(FLEET).await.unwrap();
    assert_eq!(seen[0].guest, Some(GuestStage::DockerReady));

    assert_eq!(n.foreign(), before);
}

#[tokio::test]
async fn running_domains_that_are_not_the_fleets_count_what_they_hold() {
    let n = Node::new();
    let o = owner(0, 1, None);
    n.host.create(&vm(o.clone())).await.unwrap();
    n.host.observe(FLEET).await.unwrap();
    // The node's foreign domains: ci-linux-7 (1 GiB, 1 vCPU) and
    // ci-linux-0-old (512 MiB, 1 vCPU) run; legacy-builder is shut off.
    let mib = 1u64 << 20;
    assert_eq!(
        n.host.host_state().foreign,
        ForeignUse {
            domains: 2,
            memory_bytes: 1536 * mib,
            vcpus: 2
        }
    );
    // Started, it holds its memory too; for another fleet our VM is foreign.
    n.conn()
        .lookup_domain_by_name("legacy-builder")
        .unwrap()
        .create()
        .unwrap();
    n.host.observe("other-fleet").await.unwrap();
    assert_eq!(
        n.host.host_state().foreign,
        ForeignUse {
            domains: 4,
            memory_bytes: 2560 * mib + o.shape.memory_bytes,
            vcpus: 3 + u64::from(o.shape.cpus)
        }
    );
}

#[tokio::test]
async fn steady_state_observe_is_one_listing_call() {
    let n = Node::new();
    for i in 0..3 {
        n.host.create(&vm(owner(i, 1, None))).await.unwrap();
    }
    // First sight of each domain (3 ours + 3 foreign) costs one read each.
    let c0 = n.host.libvirt_calls();
    assert_eq!(n.host.observe(FLEET).await.unwrap().len(), 3);
    let c1 = n.host.libvirt_calls();
    // Plus, after our own creates changed the pool, one listing of its
    // volumes for leftovers (the pool's handle is kept from the creates);
    // cached from then on.
    assert_eq!(c1 - c0, 1 + 6 - 3 + 1, "ours were cached by create");
    assert_eq!(n.host.observe(FLEET).await.unwrap().len(), 3);
    assert_eq!(n.host.libvirt_calls() - c1, 1);

    // A new foreign domain costs one read once, then nothing.
    let conn = n.conn();
    conn.define_domain_xml(&fixture("foreign-late.xml"))
        .unwrap();
    let c2 = n.host.libvirt_calls();
    assert_eq!(n.host.observe(FLEET).await.unwrap().len(), 3);
    assert_eq!(n.host.libvirt_calls() - c2, 2);
    let c3 = n.host.libvirt_calls();
    n.host.observe(FLEET).await.unwrap();
    assert_eq!(n.host.libvirt_calls() - c3, 1);
}

#[tokio::test]
async fn create_is_idempotent() {
    let n = Node::new();
    let o = owner(1, 1, Some(1 << 30));
    n.host.create(&vm(o.clone())).await.unwrap();
    let vols = n.volumes();
    let first = n.host.observe(FLEET).await.unwrap();
    n.host.create(&vm(o.clone())).await.unwrap();
    assert_eq!(n.host.observe(FLEET).await.unwrap(), first);
    assert_eq!(n.volumes(), vols);
}

#[tokio::test]
async fn a_half_created_vm_with_volumes_but_no_domain_is_adopted() {
    let n = Node::new();
    let o = owner(2, 4, Some(1 << 30));
    // A crash after the volumes, before define: hangar recorded them (its
    // intent) before it made them.
    let record: Vec<String> = [
        hangar::model::names::root_volume_name(&o.slot, 4),
        hangar::model::names::cache_volume_name(&o.slot),
    ]
    .iter()
    .map(|v| format!("{POOL}/{v}"))
    .collect();
    std::fs::write(
        n._dir.path().join("volumes.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let pool = n.pool();
    let base = pool.lookup_storage_vol_by_name("base.qcow2").unwrap();
    for spec in [
        VolumeSpec {
            name: hangar::model::names::root_volume_name(&o.slot, 4),
            capacity_bytes: 4 << 30,
            format: VolumeFormat::Qcow2,
            backing: Some(xml::Backing {
                path: base.path().unwrap(),
                format: VolumeFormat::Qcow2,
            }),
        },
        VolumeSpec {
            name: hangar::model::names::cache_volume_name(&o.slot),
            capacity_bytes: 1 << 30,
            format: VolumeFormat::Qcow2,
            backing: None,
        },
    ] {
        virt::storage_vol::StorageVol::create_xml(&pool, &xml::volume_xml(&spec), 0).unwrap();
    }
    let vols_before = n.volumes();
    n.host.create(&vm(o.clone())).await.unwrap();
    let seen = n.host.observe(FLEET).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].owner, o);
    assert_eq!(seen[0].state, VmState::Running);
    let mut expected = vols_before;
    expected.push(hangar::model::names::seed_volume_name(&o.slot, 4));
    expected.sort();
    assert_eq!(n.volumes(), expected);
}

#[tokio::test]
async fn a_defined_but_unstarted_vm_keeps_its_uuid_and_ownership() {
    let n = Node::new();
    let o = owner(4, 2, None);
    let mut spec = DomainSpec::for_vm(
        DomainType::Test,
        POOL,
        &o,
        None,
        &NetworkAttachment::None,
        true,
        None,
    );
    spec.uuid = Some("5f1f1b4e-6a55-4a8c-9f3d-0c7a4c1d2e3f".into());
    n.conn().define_domain_xml(&xml::domain_xml(&spec)).unwrap();
    let seen = n.host.observe(FLEET).await.unwrap();
    assert_eq!(seen[0].state, VmState::ShutOff);

    // The retry carries a later creation time; the record under the UUID stays.
    let mut retry = o.clone();
    retry.created_at = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
    n.host.create(&vm(retry)).await.unwrap();
    let seen = n.host.observe(FLEET).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uuid, "5f1f1b4e-6a55-4a8c-9f3d-0c7a4c1d2e3f");
    assert_eq!(seen[0].owner, o);
    assert_eq!(seen[0].state, VmState::Running);
}

#[tokio::test]
async fn replace_keeps_the_cache_and_makes_a_new_root_overlay() {
    let n = Node::new();
    let g1 = owner(5, 1, Some(2 << 30));
    n.host.create(&vm(g1.clone())).await.unwrap();
    let cache_key = n
        .pool()
        .lookup_storage_vol_by_name("ci-linux-5-cache.qcow2")
        .unwrap()
        .key()
        .unwrap();
    let old = n.host.observe(FLEET).await.unwrap().remove(0);

    // Creating the next generation while the old one is defined is refused.
    let g2 = owner(5, 2, Some(2 << 30));
    let err = n.host.create(&vm(g2.clone())).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);

    n.host.delete(&old.vm_ref(), false).await.unwrap();
    n.host.create(&vm(g2.clone())).await.unwrap();
    let new = n.host.observe(FLEET).await.unwrap().remove(0);
    assert_ne!(new.uuid, old.uuid);
    assert_eq!(new.owner.generation, 2);
    let vols = n.volumes();
    assert!(vols.contains(&"ci-linux-5-g2-root.qcow2".to_string()));
    assert!(!vols.contains(&"ci-linux-5-g1-root.qcow2".to_string()));
    assert!(!vols.contains(&"ci-linux-5-g1-seed.iso".to_string()));
    let cache = n
        .pool()
        .lookup_storage_vol_by_name("ci-linux-5-cache.qcow2")
        .unwrap();
    assert_eq!(cache.key().unwrap(), cache_key);
}

#[tokio::test]
async fn delete_leaves_nothing_of_ours_and_every_foreign_thing_untouched() {
    let n = Node::new();
    let before = n.foreign();
    let vols_before = n.volumes();
    for i in 0..2 {
        n.host
            .create(&vm(owner(i, 1, Some(1 << 30))))
            .await
            .unwrap();
    }
    for v in n.host.observe(FLEET).await.unwrap() {
        n.host.delete(&v.vm_ref(), true).await.unwrap();
        // Deleting again is a no-op.
        n.host.delete(&v.vm_ref(), true).await.unwrap();
    }
    assert!(n.host.observe(FLEET).await.unwrap().is_empty());
    assert_eq!(n.volumes(), vols_before);
    assert_eq!(n.foreign(), before);
    let names: Vec<_> = n.domains().into_keys().collect();
    let mut expected: Vec<_> = FOREIGN_DOMAINS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn foreign_domains_are_never_deleted_or_adopted() {
    let n = Node::new();
    let before = n.foreign();
    // A foreign domain holds the name of slot 7.
    let err = n.host.create(&vm(owner(7, 1, None))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err}");
    assert!(err.message.contains("not hangar's"), "{err}");
    // Deleting it by UUID is refused too.
    let conn = n.conn();
    let dom = conn.lookup_domain_by_name("ci-linux-7").unwrap();
    let r = vm_ref(&n.host, &owner(7, 1, None), &dom.uuid_string().unwrap());
    assert_eq!(
        n.host.delete(&r, true).await.unwrap_err().kind,
        ErrorKind::Refused
    );
    assert_eq!(
        n.host.remove_seed(&r).await.unwrap_err().kind,
        ErrorKind::Refused
    );
    assert_eq!(n.host.start(&r).await.unwrap_err().kind, ErrorKind::Refused);
    // A foreign volume at our root overlay's name is not taken over.
    let err = n.host.create(&vm(owner(3, 1, None))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err}");
    assert_eq!(n.foreign(), before);
}

#[tokio::test]
async fn remove_seed_detaches_and_deletes_the_seed() {
    let (n, v) = Node::with_vm(6).await;
    n.host.remove_seed(&v.vm_ref()).await.unwrap();
    n.host.remove_seed(&v.vm_ref()).await.unwrap();
    assert!(!n.volumes().contains(&"ci-linux-6-g1-seed.iso".to_string()));
    let (_, x) = &n.domains()["ci-linux-6"];
    assert!(!x.contains("hangar-seed"), "{x}");
    assert!(!n.host.observe(FLEET).await.unwrap()[0].seed_attached);
    n.host.delete(&v.vm_ref(), true).await.unwrap();
}

/// The test driver has no guest agent: a drain cannot be delivered, and is
/// recorded as such in the domain's metadata, which a fresh process (a
/// new connection reading the XML) sees too; the planner then falls back
/// to waiting while busy. A recorded delivery reads back the same way.
#[tokio::test]
async fn a_drain_without_a_guest_agent_is_recorded_undeliverable_on_the_domain() {
    use hangar::plan::model::DrainState;
    let (n, v) = Node::with_vm(8).await;
    assert_eq!(v.drain, None);
    let calls = n.host.libvirt_calls();
    assert_eq!(
        n.host.drain(&v.vm_ref()).await.unwrap(),
        DrainState::Undeliverable
    );
    assert!(n.host.libvirt_calls() > calls, "the agent was asked");
    assert_eq!(
        n.host.observe(FLEET).await.unwrap()[0].drain,
        Some(DrainState::Undeliverable)
    );
    let (_, x) = &n.domains()["ci-linux-8"];
    assert!(
        x.contains(hangar::providers::libvirt::DRAIN_NS) && x.contains("undeliverable"),
        "{x}"
    );
    n.host
        .record_drain(&v.vm_ref(), DrainState::Delivered)
        .await
        .unwrap();
    assert_eq!(
        n.host.observe(FLEET).await.unwrap()[0].drain,
        Some(DrainState::Delivered)
    );
    n.host.delete(&v.vm_ref(), true).await.unwrap();
}

#[tokio::test]
async fn cache_usage_reports_our_cache_volumes() {
    let n = Node::new();
    n.host
        .create(&vm(owner(0, 1, Some(3 << 30))))
        .await
        .unwrap();
    n.host.create(&vm(owner(1, 1, None))).await.unwrap();
    let usage = n.host.cache_usage(FLEET).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].slot, "ci-linux-0");
    assert_eq!(usage[0].capacity_bytes, Some(3 << 30));
    assert!(
        usage[0].addresses.is_empty(),
        "the test driver has no agent"
    );
}

/// A loopback HTTP server that serves `body` at `/jammy.qcow2` and counts
/// requests: the only kind of server a test may download from.
async fn image_server(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/jammy.qcow2",
        axum::routing::get(move || {
            let body = body.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/jammy.qcow2"), hits)
}

fn qcow2_image() -> Vec<u8> {
    let mut b = b"QFI\xfb\0\0\0\x03".to_vec();
    b.resize(24, 0);
    b.extend_from_slice(&(2u64 << 30).to_be_bytes());
    b.resize(4096, 7);
    b
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test]
async fn a_url_image_is_downloaded_once_verified_and_kept_in_the_pool() {
    let n = Node::new();
    let body = qcow2_image();
    let sha = sha256_hex(&body);
    let (url, hits) = image_server(body).await;
    let image = format!("{url}#sha256={sha}");
    for index in [0, 1] {
        let mut o = owner(index, 1, None);
        o.shape.image = image.clone();
        n.host.create(&vm(o)).await.unwrap();
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1, "downloaded once");
    let vols = n.volumes();
    let name = format!("hangar-image-{}.qcow2", &sha[..16]);
    assert!(vols.contains(&name), "{vols:?}");
    assert!(!vols.iter().any(|v| v.ends_with(".partial")), "{vols:?}");
    let root = n
        .pool()
        .lookup_storage_vol_by_name("ci-linux-0-g1-root.qcow2")
        .unwrap()
        .xml_desc(0)
        .unwrap();
    assert!(
        root.contains(&name),
        "the overlay is backed by the downloaded image: {root}"
    );
}

#[tokio::test]
async fn a_url_image_with_the_wrong_checksum_never_reaches_the_pool() {
    let n = Node::new();
    let (url, hits) = image_server(qcow2_image()).await;
    let mut o = owner(0, 1, None);
    o.shape.image = format!("{url}#sha256={}", "ab".repeat(32));
    let err = n.host.create(&vm(o.clone())).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.message.contains("sha256 is"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(!n.volumes().iter().any(|v| v.starts_with("hangar-image-")));
    assert!(n.domains().keys().all(|d| d != "ci-linux-0"));

    // No checksum, or plain http to anything but loopback: refused before
    // any request is made.
    o.shape.image = url.clone();
    let err = n.host.create(&vm(o.clone())).await.unwrap_err();
    assert!(err.message.contains("sha256"), "{err}");
    o.shape.image = format!("http://192.0.2.1/jammy.qcow2#sha256={}", "ab".repeat(32));
    let err = n.host.create(&vm(o)).await.unwrap_err();
    assert!(err.message.contains("https"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

// ---- every generated XML passes libvirt's own schemas ----

fn validate(dir: &Path, name: &str, text: &str) {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, hangar::model::xml::with_declaration(text)).unwrap();
    let out = Command::new("virt-xml-validate")
        .arg(&path)
        .output()
        .expect("run virt-xml-validate");
    assert!(
        out.status.success(),
        "{name} fails virt-xml-validate:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn have_validator() -> bool {
    let found = Command::new("virt-xml-validate")
        .arg("--help")
        .output()
        .is_ok();
    if !found {
        if std::env::var("HANGAR_REQUIRE_LIBVIRTD").as_deref() == Ok("1") {
            panic!("virt-xml-validate is missing (install libvirt-clients)");
        }
        eprintln!("SKIPPED: virt-xml-validate not found (install libvirt-clients)");
    }
    found
}

#[test]
fn every_generated_xml_passes_virt_xml_validate() {
    if !have_validator() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let networks = [
        NetworkAttachment::None,
        NetworkAttachment::User,
        NetworkAttachment::Network {
            name: "runners".into(),
            filter: Some("clean-traffic".into()),
        },
        NetworkAttachment::Network {
            name: "runners".into(),
            filter: None,
        },
    ];
    let boots = [
        None,
        Some(DirectBoot {
            kernel: "/var/lib/hangar/vmlinuz".into(),
            initrd: Some("/var/lib/hangar/initrd.img".into()),
            cmdline: Some("root=/dev/vda console=ttyS0".into()),
        }),
        Some(DirectBoot {
            kernel: "/var/lib/hangar/vmlinuz".into(),
            initrd: None,
            cmdline: None,
        }),
    ];
    let mut count = 0;
    for domain_type in [DomainType::Qemu, DomainType::Kvm, DomainType::Test] {
        for (ni, net) in networks.iter().enumerate() {
            for (bi, boot) in boots.iter().enumerate() {
                for cache in [None, Some(1u64 << 30)] {
                    let mut spec = DomainSpec::for_vm(
                        domain_type,
                        POOL,
                        &owner(0, 1, cache),
                        boot.as_ref(),
                        net,
                        cache.is_some(),
                        Some("/var/log/hangar/ci-linux-0-g1.console.log".into()),
                    );
                    if bi == 0 {
                        spec.uuid = Some("5f1f1b4e-6a55-4a8c-9f3d-0c7a4c1d2e3f".into());
                    }
                    // A session daemon's VM binds its agent socket beside
                    // its console log.
                    if bi == 1 {
                        spec.agent_socket =
                            Some("/home/u/consoles/ci-linux-0-g1.console.agent".into());
                    }
                    let name = format!("domain-{domain_type:?}-{ni}-{bi}-{}.xml", cache.is_some());
                    validate(dir.path(), &name, &xml::domain_xml(&spec));
                    count += 1;
                }
            }
        }
    }
    assert_eq!(count, 3 * 4 * 3 * 2);
    let volumes = [
        VolumeSpec {
            name: "ci-linux-0-g1-root.qcow2".into(),
            capacity_bytes: 20 << 30,
            format: VolumeFormat::Qcow2,
            backing: Some(xml::Backing {
                path: "/var/lib/libvirt/images/base.qcow2".into(),
                format: VolumeFormat::Qcow2,
            }),
        },
        VolumeSpec {
            name: "ci-linux-0-cache.qcow2".into(),
            capacity_bytes: 50 << 30,
            format: VolumeFormat::Qcow2,
            backing: None,
        },
        VolumeSpec {
            name: "ci-linux-0-g1-seed.iso".into(),
            capacity_bytes: 2048 * 180,
            format: VolumeFormat::Raw,
            backing: None,
        },
    ];
    for (i, v) in volumes.iter().enumerate() {
        validate(dir.path(), &format!("volume-{i}.xml"), &xml::volume_xml(v));
    }
}

/// Issue 18: once the host's pool and base image have been looked up, a
/// create costs only its own round trips, and a delete reads the domain
/// once (the ownership check) (test driver: no seed upload here).
#[tokio::test]
async fn a_create_and_a_delete_cost_only_their_own_round_trips() {
    let n = Node::new();
    n.host
        .create(&vm(owner(0, 1, Some(1 << 30))))
        .await
        .unwrap();
    let c0 = n.host.libvirt_calls();
    let o = owner(1, 1, Some(1 << 30));
    n.host.create(&vm(o.clone())).await.unwrap();
    // The name's lookup; a lookup and a create for each of root, cache and
    // seed; define; start.
    assert_eq!(n.host.libvirt_calls() - c0, 1 + 3 * 2 + 2);
    let seen = n.host.observe(FLEET).await.unwrap();
    let ours = seen.iter().find(|v| v.owner.slot == o.slot).unwrap();
    let c1 = n.host.libvirt_calls();
    n.host.delete(&ours.vm_ref(), true).await.unwrap();
    // The ownership check (lookup, read); its state; stop; a lookup and a
    // delete for each of root, seed and cache; undefine.
    assert_eq!(n.host.libvirt_calls() - c1, 2 + 1 + 1 + 3 * 2 + 1);
}
