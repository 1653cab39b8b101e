//! The qemu guest agent: a host→guest channel (`org.qemu.guest_agent.0`,
//! a virtio-serial port every domain hangar defines has) reached through
//! the host's libvirt connection, so it works the same on local and remote
//! hosts. Used only when needed, never in a steady-state observation:
//!
//! - drain: `guest-exec` of the guest's `drain-request`, which tells the
//!   runner to take no job after its current one (see `docs/guest.md`);
//!   the outcome, delivered or not, is recorded on the domain as metadata
//!   in [`DRAIN_NS`], so every process (an `apply` beside a daemon) sees it
//!   in the domain XML it reads anyway;
//! - file-system use inside the guest (`guest-get-fsinfo`: root and cache,
//!   used and total bytes) and its addresses (`guest-network-get-interfaces`),
//!   for `status` and the metrics, read together at most once per
//!   [`GUEST_FS_REFRESH`] per VM.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use virt::domain::Domain;
use virt::error::ErrorNumber;

use super::errors::map_error;
use super::observe::Known;
use super::Inner;
use crate::plan::model::{DrainState, VmRef};
use crate::providers::{ErrorKind, ProviderError};

/// Namespace of the drain record in a domain's `<metadata>`.
pub const DRAIN_NS: &str = "https://hangar.dev/xmlns/drain/1";
/// Its element and the prefix written for it.
pub const DRAIN_ELEMENT: &str = "drain";
pub const DRAIN_PREFIX: &str = "hangar-drain";
/// The guest's script a drain runs (as root, by the agent).
pub const DRAIN_REQUEST: &str = "/usr/local/lib/hangar/drain-request";
/// The guest's copy of its console markers (written by `say`, root's, in
/// a tmpfs): where a host's console log is not on this machine, the agent
/// reads the guest's progress from it.
pub const MARKERS_FILE: &str = "/run/hangar/markers";
/// A settled guest's markers (its runner started) are read again after this
/// long; a booting one's on every observation.
pub const STAGE_REFRESH: Duration = Duration::from_secs(60);
/// At most this much of the markers file per read; the rest comes next time.
const MARKERS_CHUNK: u64 = 64 * 1024;
/// How long one agent command may take, in seconds.
const AGENT_TIMEOUT_SECS: i32 = 10;
/// A guest's file-system use is read again after this long, not sooner.
pub const GUEST_FS_REFRESH: Duration = Duration::from_secs(5 * 60);
/// A reading without file systems or without an address (a guest booting:
/// its agent not up yet, no lease yet) is read again after this long,
/// doubled each time it is still incomplete, up to [`GUEST_FS_REFRESH`]: a
/// new VM shows its use and address within a minute of having them, and a
/// guest that has no agent or no address at all costs a few reads more.
pub const GUEST_FS_RETRY: Duration = Duration::from_secs(30);

/// A guest's reading as kept: when it was read, and how many readings in
/// a row were incomplete.
#[derive(Debug, Clone)]
pub(super) struct KeptReading {
    at: Instant,
    reading: GuestReading,
    incomplete: u32,
}

impl KeptReading {
    /// How long after it was read this reading is read again.
    fn refresh(&self) -> Duration {
        if self.reading.disks.is_some() && !self.reading.addresses.is_empty() {
            return GUEST_FS_REFRESH;
        }
        GUEST_FS_RETRY
            .saturating_mul(1 << self.incomplete.saturating_sub(1).min(8))
            .min(GUEST_FS_REFRESH)
    }
}

/// One file system as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestFs {
    pub mountpoint: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// The file systems hangar cares about inside one guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestDisks {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<GuestFs>,
    /// The file system on the cache disk (serial `hangar-cache`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<GuestFs>,
}

/// What a guest's agent told of it at its last reading (see
/// [`GUEST_FS_REFRESH`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestReading {
    /// `None`: the agent did not answer `guest-get-fsinfo`.
    pub disks: Option<GuestDisks>,
    /// The guest's addresses on the NICs libvirt gave it, IPv4 first; empty
    /// when it has none or the agent did not answer.
    pub addresses: Vec<IpAddr>,
}

/// The MAC prefix libvirt (and qemu) give every NIC they make; hangar never
/// sets a MAC of its own. Interfaces the guest made itself (Docker's
/// `docker0` at 02:42:…, its veths, other bridges) have other MACs and
/// addresses the host cannot reach, so they are not the VM's address.
const VM_NIC_MAC_PREFIX: &str = "52:54:00:";

/// The addresses in a `guest-network-get-interfaces` answer that the host
/// can reach the guest at: on the VM's own NICs (see [`VM_NIC_MAC_PREFIX`]),
/// neither loopback nor link-local; IPv4 first, each family in the agent's
/// order.
pub fn guest_addresses(interfaces: &Value) -> Vec<IpAddr> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for nic in interfaces.as_array().into_iter().flatten() {
        let mac = nic
            .get("hardware-address")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        if !mac.starts_with(VM_NIC_MAC_PREFIX) {
            continue;
        }
        let addresses = nic.get("ip-addresses").and_then(Value::as_array);
        for a in addresses.into_iter().flatten() {
            let Some(ip) = a
                .get("ip-address")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<IpAddr>().ok())
            else {
                continue;
            };
            match ip {
                IpAddr::V4(x) if !(x.is_loopback() || x.is_link_local() || x.is_unspecified()) => {
                    v4.push(ip)
                }
                // fe80::/10; `Ipv6Addr::is_unicast_link_local` is not stable
                // on every toolchain this builds with.
                IpAddr::V6(x)
                    if !(x.is_loopback()
                        || x.is_unspecified()
                        || (x.segments()[0] & 0xffc0) == 0xfe80) =>
                {
                    v6.push(ip)
                }
                _ => {}
            }
        }
    }
    v4.dedup();
    v6.dedup();
    v4.extend(v6);
    v4
}

/// Why the agent did not answer a command.
#[derive(Debug)]
pub enum AgentError {
    /// The guest cannot be told: no channel, no agent running in it, the
    /// agent refused or timed out, the command failed in the guest. Not a
    /// fault of the connection.
    Unavailable(String),
    /// The connection to libvirt failed.
    Provider(ProviderError),
}

/// The drain record's XML, as `virDomainSetMetadata` takes it.
pub fn drain_metadata(state: DrainState) -> String {
    let state = match state {
        DrainState::Delivered => "delivered",
        DrainState::Undeliverable => "undeliverable",
    };
    format!("<{DRAIN_ELEMENT} state='{state}'/>")
}

/// The state a drain record's `state` attribute names.
pub fn parse_drain_state(value: &str) -> Option<DrainState> {
    match value {
        "delivered" => Some(DrainState::Delivered),
        "undeliverable" => Some(DrainState::Undeliverable),
        _ => None,
    }
}

/// The root and cache file systems in a `guest-get-fsinfo` answer.
pub fn guest_disks(fsinfo: &Value) -> GuestDisks {
    let mut disks = GuestDisks::default();
    for fs in fsinfo.as_array().into_iter().flatten() {
        let (Some(mountpoint), Some(used), Some(total)) = (
            fs.get("mountpoint").and_then(Value::as_str),
            fs.get("used-bytes").and_then(Value::as_u64),
            fs.get("total-bytes").and_then(Value::as_u64),
        ) else {
            continue;
        };
        let one = GuestFs {
            mountpoint: mountpoint.to_string(),
            used_bytes: used,
            total_bytes: total,
        };
        let on_cache = fs
            .get("disk")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|d| {
                d.get("serial").and_then(Value::as_str) == Some(crate::provision::CACHE_DISK_SERIAL)
            });
        if mountpoint == "/" {
            disks.root = Some(one);
        } else if on_cache && disks.cache.is_none() {
            disks.cache = Some(one);
        }
    }
    disks
}

fn agent_unavailable(code: ErrorNumber) -> bool {
    use ErrorNumber::*;
    matches!(
        code,
        AgentUnresponsive
            | AgentUnsynced
            | AgentCommandTimeout
            | AgentCommandFailed
            | ArgumentUnsupported
            | OperationUnsupported
            | ConfigUnsupported
            | NoSupport
            | OperationInvalid
            | InternalError
    )
}

impl Inner {
    /// One guest-agent command; its `return` value.
    pub(super) fn agent(
        &self,
        dom: &Domain,
        name: &str,
        execute: &str,
        arguments: Option<Value>,
    ) -> Result<Value, AgentError> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        agent_once(dom, &self.config.name, name, execute, arguments).inspect_err(|e| {
            if let AgentError::Provider(err) = e {
                if err.kind == ErrorKind::Transient {
                    self.drop_connection();
                }
            }
        })
    }

    /// Run `path` in the guest (as root) and wait for it, briefly: its
    /// exit code.
    fn agent_exec(&self, dom: &Domain, name: &str, path: &str) -> Result<i64, AgentError> {
        exec_wait(
            |execute, arguments| self.agent(dom, name, execute, Some(arguments)),
            path,
            Duration::from_secs(AGENT_TIMEOUT_SECS as u64),
            Duration::from_millis(200),
        )
        .map(|run| run.exit_code)
    }

    /// What the guest wrote to [`MARKERS_FILE`] from byte `offset` on (at
    /// most [`MARKERS_CHUNK`]); empty while there is no such file yet.
    pub(super) fn read_markers(
        &self,
        dom: &Domain,
        name: &str,
        offset: u64,
    ) -> Result<Vec<u8>, AgentError> {
        use base64::Engine as _;
        let opened = self.agent(
            dom,
            name,
            "guest-file-open",
            Some(json!({ "path": MARKERS_FILE, "mode": "r" })),
        );
        let handle = match opened {
            Ok(h) => h
                .as_i64()
                .ok_or_else(|| AgentError::Unavailable("guest-file-open: no handle".into()))?,
            // The agent answers but the file is not there: nothing printed yet.
            Err(AgentError::Unavailable(e)) if e.contains("No such file") => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let read = (|| {
            if offset > 0 {
                self.agent(
                    dom,
                    name,
                    "guest-file-seek",
                    Some(json!({ "handle": handle, "offset": offset, "whence": "set" })),
                )?;
            }
            let got = self.agent(
                dom,
                name,
                "guest-file-read",
                Some(json!({ "handle": handle, "count": MARKERS_CHUNK })),
            )?;
            Ok(got
                .get("buf-b64")
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default())
        })();
        // Closed whatever the read did: the agent keeps a handle otherwise.
        let _ = self.agent(
            dom,
            name,
            "guest-file-close",
            Some(json!({ "handle": handle })),
        );
        read
    }

    /// Tell the guest of `vm` to drain, and record what came of it.
    pub(super) fn drain(&self, vm: &VmRef) -> Result<DrainState, ProviderError> {
        let conn = self.conn()?;
        let Some((dom, _)) = self.our_domain(&conn, vm)? else {
            return Err(self.err(ErrorKind::NotFound, format!("domain {} is gone", vm.name)));
        };
        let state = match self.agent_exec(&dom, &vm.name, DRAIN_REQUEST) {
            Ok(0) => DrainState::Delivered,
            Ok(code) => {
                tracing::warn!(host = %self.config.name, vm = %vm.name, code,
                    "the guest refused the drain: waiting while busy instead");
                DrainState::Undeliverable
            }
            Err(AgentError::Unavailable(why)) => {
                tracing::warn!(host = %self.config.name, vm = %vm.name, %why,
                    "drain not delivered: waiting while busy instead");
                DrainState::Undeliverable
            }
            Err(AgentError::Provider(e)) => return Err(e),
        };
        self.record_drain_on(&dom, vm, state)?;
        Ok(state)
    }

    /// Record a drain's outcome on the domain, without telling the guest.
    pub(super) fn record_drain(&self, vm: &VmRef, state: DrainState) -> Result<(), ProviderError> {
        let conn = self.conn()?;
        let Some((dom, _)) = self.our_domain(&conn, vm)? else {
            return Err(self.err(ErrorKind::NotFound, format!("domain {} is gone", vm.name)));
        };
        self.record_drain_on(&dom, vm, state)
    }

    fn record_drain_on(
        &self,
        dom: &Domain,
        vm: &VmRef,
        state: DrainState,
    ) -> Result<(), ProviderError> {
        let running = self.call(&format!("read state of {}", vm.name), || dom.is_active())?;
        let mut flags = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;
        if running {
            flags |= virt::sys::VIR_DOMAIN_AFFECT_LIVE;
        }
        self.call(&format!("record drain of {}", vm.name), || {
            dom.set_metadata(
                virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some(&drain_metadata(state)),
                Some(DRAIN_PREFIX),
                Some(DRAIN_NS),
                flags,
            )
        })?;
        if let Some(Known::Ours { drain, .. }) = self
            .known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(&vm.uuid)
        {
            *drain = Some(state);
        }
        Ok(())
    }

    /// The guest's root and cache file systems and its addresses, from its
    /// agent; cached per domain UUID for [`GUEST_FS_REFRESH`], an incomplete
    /// reading for less ([`GUEST_FS_RETRY`]; no libvirt call meanwhile).
    pub(super) fn guest_reading_of(
        &self,
        conn: &virt::connect::Connect,
        uuid: &str,
        name: &str,
    ) -> GuestReading {
        let kept = self
            .guest_fs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(uuid)
            .cloned();
        if let Some(kept) = &kept {
            if kept.at.elapsed() < kept.refresh() {
                return kept.reading.clone();
            }
        }
        let dom = match self.call(&format!("look up domain {name}"), || {
            conn.lookup_domain_by_uuid_string(uuid)
        }) {
            Ok(dom) => dom,
            Err(e) => {
                tracing::debug!(host = %self.config.name, vm = %name, error = %e, "guest agent");
                return GuestReading::default();
            }
        };
        let mut reading = GuestReading::default();
        match self.agent(&dom, name, "guest-get-fsinfo", None) {
            Ok(v) => reading.disks = Some(guest_disks(&v)),
            Err(AgentError::Unavailable(why)) => {
                tracing::debug!(host = %self.config.name, vm = %name, %why, "no file-system use from the guest");
            }
            Err(AgentError::Provider(e)) => {
                tracing::warn!(host = %self.config.name, vm = %name, error = %e, "guest file systems");
                return reading;
            }
        }
        // An agent that did not answer the first command is not asked the
        // second at once: it is not up yet, or not there.
        if reading.disks.is_some() {
            match self.agent(&dom, name, "guest-network-get-interfaces", None) {
                Ok(v) => reading.addresses = guest_addresses(&v),
                Err(AgentError::Unavailable(why)) => {
                    tracing::debug!(host = %self.config.name, vm = %name, %why, "no addresses from the guest");
                }
                Err(AgentError::Provider(e)) => {
                    tracing::warn!(host = %self.config.name, vm = %name, error = %e, "guest addresses");
                    return reading;
                }
            }
        }
        let complete = reading.disks.is_some() && !reading.addresses.is_empty();
        let incomplete = match (complete, &kept) {
            (true, _) => 0,
            (false, Some(k)) => k.incomplete.saturating_add(1),
            (false, None) => 1,
        };
        self.guest_fs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                uuid.to_string(),
                KeptReading {
                    at: Instant::now(),
                    reading: reading.clone(),
                    incomplete,
                },
            );
        reading
    }
}

/// The guest's cache pruning (as root, by the agent, on demand).
pub const CACHE_PRUNE: &str = "/usr/local/lib/hangar/cache-prune";
/// How long an on-demand prune may run: removing a large cache's blobs on
/// a slow disk takes minutes, not seconds.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What a program run in the guest by its agent ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRun {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// One agent command on `dom`; its `return` value. `host` and `name` only
/// name the call in errors.
fn agent_once(
    dom: &Domain,
    host: &str,
    name: &str,
    execute: &str,
    arguments: Option<Value>,
) -> Result<Value, AgentError> {
    let mut cmd = json!({ "execute": execute });
    if let Some(arguments) = arguments {
        cmd["arguments"] = arguments;
    }
    let answer = dom
        .qemu_agent_command(&cmd.to_string(), AGENT_TIMEOUT_SECS, 0)
        .map_err(|e| match e.code() {
            virt::enumutil::Enum::Known(code) if agent_unavailable(code) => {
                AgentError::Unavailable(format!("{execute}: {}", e.message()))
            }
            _ => AgentError::Provider(map_error(host, &format!("{execute} on {name}"), &e)),
        })?;
    let value: Value = serde_json::from_str(&answer)
        .map_err(|e| AgentError::Unavailable(format!("{execute}: answer is not JSON: {e}")))?;
    value
        .get("return")
        .cloned()
        .ok_or_else(|| AgentError::Unavailable(format!("{execute}: no return value")))
}

/// Run `path` in the guest (as root, by `guest-exec` through `call`) and
/// wait up to `timeout` for it, asking every `poll`.
fn exec_wait(
    mut call: impl FnMut(&str, Value) -> Result<Value, AgentError>,
    path: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<GuestRun, AgentError> {
    let started = call(
        "guest-exec",
        json!({ "path": path, "capture-output": true }),
    )?;
    let pid = started
        .get("pid")
        .and_then(Value::as_i64)
        .ok_or_else(|| AgentError::Unavailable("guest-exec: no pid".into()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let status = call("guest-exec-status", json!({ "pid": pid }))?;
        if status.get("exited").and_then(Value::as_bool) == Some(true) {
            return Ok(GuestRun {
                exit_code: status.get("exitcode").and_then(Value::as_i64).unwrap_or(-1),
                stdout: exec_output(&status, "out-data"),
                stderr: exec_output(&status, "err-data"),
            });
        }
        if Instant::now() >= deadline {
            return Err(AgentError::Unavailable(format!(
                "{path} did not finish within {timeout:?}"
            )));
        }
        std::thread::sleep(poll);
    }
}

/// The text of a `guest-exec-status` output field (base64 in the answer).
fn exec_output(status: &Value, field: &str) -> String {
    use base64::Engine as _;
    let bytes = status
        .get(field)
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl super::serial::SlotDomain {
    /// Run the guest's `cache-prune` now (as root) and wait for it: what it
    /// printed and its exit code.
    pub fn cache_prune(&self) -> Result<GuestRun, AgentError> {
        let (dom, host, name) = (self.domain(), self.host(), self.owner.slot.as_str());
        exec_wait(
            |execute, arguments| agent_once(dom, host, name, execute, Some(arguments)),
            CACHE_PRUNE,
            PRUNE_TIMEOUT,
            Duration::from_millis(500),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incomplete_guest_reading_is_read_again_sooner_backing_off_to_the_usual() {
        let disks = GuestDisks {
            root: None,
            cache: None,
        };
        let kept = |disks: Option<GuestDisks>, addresses: Vec<IpAddr>, incomplete| KeptReading {
            at: Instant::now(),
            reading: GuestReading { disks, addresses },
            incomplete,
        };
        let address: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            kept(Some(disks.clone()), vec![address], 0).refresh(),
            GUEST_FS_REFRESH
        );
        let waits: Vec<u64> = (1..=6)
            .map(|n| kept(None, Vec::new(), n).refresh().as_secs())
            .collect();
        assert_eq!(waits, [30, 60, 120, 240, 300, 300]);
        // The agent answers, the lease is not there yet.
        assert_eq!(kept(Some(disks), Vec::new(), 1).refresh(), GUEST_FS_RETRY);
    }

    /// libvirt's test driver has no guest agent: its running domain `test`
    /// answers no agent command, which is "no agent", not a provider fault.
    #[test]
    fn a_guest_exec_without_an_agent_is_no_agent() {
        let conn = virt::connect::Connect::open(Some("test:///default")).unwrap();
        let dom = conn.lookup_domain_by_name("test").unwrap();
        assert!(dom.is_active().unwrap());
        let r = agent_once(
            &dom,
            "local",
            "test",
            "guest-exec",
            Some(json!({ "path": CACHE_PRUNE, "capture-output": true })),
        );
        assert!(
            matches!(&r, Err(AgentError::Unavailable(why)) if why.starts_with("guest-exec: ")),
            "{r:?}"
        );
    }

    #[test]
    fn exec_output_decodes_base64_and_is_empty_without_it() {
        let status =
            json!({ "exited": true, "exitcode": 0, "out-data": "aGFuZ2FyLXBydW5lOiBvawo=" });
        assert_eq!(exec_output(&status, "out-data"), "hangar-prune: ok\n");
        assert_eq!(exec_output(&status, "err-data"), "");
    }

    #[test]
    fn fsinfo_yields_root_and_the_cache_disk_by_serial() {
        let answer = json!([
            {"name": "vda", "mountpoint": "/", "type": "ext4", "used-bytes": 1000, "total-bytes": 3000,
             "disk": [{"serial": "", "bus-type": "virtio"}]},
            {"name": "vdb", "mountpoint": "/var/cache/hangar", "type": "ext4",
             "used-bytes": 10, "total-bytes": 20, "disk": [{"serial": "hangar-cache"}]},
            {"name": "vdc", "mountpoint": "/mnt/other", "type": "ext4",
             "used-bytes": 1, "total-bytes": 2, "disk": [{"serial": "other"}]},
            {"name": "tmpfs", "mountpoint": "/run", "type": "tmpfs"}
        ]);
        let disks = guest_disks(&answer);
        assert_eq!(
            disks.root,
            Some(GuestFs {
                mountpoint: "/".into(),
                used_bytes: 1000,
                total_bytes: 3000
            })
        );
        assert_eq!(
            disks.cache.as_ref().unwrap().mountpoint,
            "/var/cache/hangar"
        );
        assert_eq!(disks.cache.unwrap().used_bytes, 10);
    }

    /// A real answer: qemu-ga 7.2 in the e2e guest (Debian 12, Docker
    /// running), with the NIC the e2e test hot-plugs on qemu's user network
    /// (`virsh qemu-agent-command DOM '{"execute":"guest-network-get-interfaces"}'`).
    const REAL_INTERFACES: &str = r#"{"return":[{"name":"lo","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"127.0.0.1","prefix":8},{"ip-address-type":"ipv6","ip-address":"::1","prefix":128}],"statistics":{"tx-packets":0,"tx-errs":0,"rx-bytes":0,"rx-dropped":0,"rx-packets":0,"rx-errs":0,"tx-bytes":0,"tx-dropped":0},"hardware-address":"00:00:00:00:00:00"},{"name":"docker0","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"172.17.0.1","prefix":16}],"statistics":{"tx-packets":0,"tx-errs":0,"rx-bytes":0,"rx-dropped":0,"rx-packets":0,"rx-errs":0,"tx-bytes":0,"tx-dropped":0},"hardware-address":"02:42:13:4a:14:e4"},{"name":"ens31","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"10.0.2.15","prefix":24},{"ip-address-type":"ipv6","ip-address":"fec0::5054:ff:fee2:e522","prefix":64},{"ip-address-type":"ipv6","ip-address":"fe80::5054:ff:fee2:e522","prefix":64}],"statistics":{"tx-packets":37,"tx-errs":0,"rx-bytes":5511,"rx-dropped":0,"rx-packets":33,"rx-errs":0,"tx-bytes":6379,"tx-dropped":0},"hardware-address":"52:54:00:e2:e5:22"}]}"#;

    #[test]
    fn addresses_are_the_vm_nics_without_loopback_and_link_local_ipv4_first() {
        let answer: Value = serde_json::from_str(REAL_INTERFACES).unwrap();
        let got: Vec<String> = guest_addresses(&answer["return"])
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["10.0.2.15", "fec0::5054:ff:fee2:e522"]);

        // IPv4 link-local goes too, and a NIC without addresses is no fault.
        let answer = json!([
            {"name": "ens3", "hardware-address": "52:54:00:12:34:56", "ip-addresses": [
                {"ip-address-type": "ipv6", "ip-address": "fd00::7", "prefix": 64},
                {"ip-address-type": "ipv4", "ip-address": "169.254.7.1", "prefix": 16},
                {"ip-address-type": "ipv4", "ip-address": "10.213.7.41", "prefix": 24}]},
            {"name": "ens4", "hardware-address": "52:54:00:AB:CD:EF"}
        ]);
        let got: Vec<String> = guest_addresses(&answer)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["10.213.7.41", "fd00::7"]);
    }

    #[test]
    fn a_guest_without_a_nic_has_no_address() {
        let answer = json!([
            {"name": "lo", "hardware-address": "00:00:00:00:00:00",
             "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}]},
            {"name": "docker0", "hardware-address": "02:42:5e:0b:9c:11",
             "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "172.17.0.1", "prefix": 16}]}
        ]);
        assert!(guest_addresses(&answer).is_empty());
        assert!(guest_addresses(&json!({"error": "not a list"})).is_empty());
    }

    #[test]
    fn drain_metadata_round_trips() {
        for state in [DrainState::Delivered, DrainState::Undeliverable] {
            let xml = drain_metadata(state);
            let value = xml.split('\'').nth(1).unwrap();
            assert_eq!(parse_drain_state(value), Some(state));
        }
        assert_eq!(parse_drain_state("maybe"), None);
    }
}
