//! A slot's serial console over libvirt, outside the engine: `hangar
//! console` attaches to it (what `virsh console` does: virDomainOpenConsole
//! on a stream), `hangar logs` asks a remote host where the console log is.
//!
//! hangar's domains have one serial port, a PTY whose output libvirt also
//! writes to the console log (`<serial type='pty'><log file=…/>`): an
//! attached console and the log see the same bytes. Blocking calls: run
//! them on their own thread.

use std::sync::Arc;

use virt::connect::Connect;
use virt::domain::Domain;
use virt::stream::Stream;

use super::errors::{map_error, optional};
use super::{connection, xml, HostConfig};
use crate::model::ownership::Ownership;
use crate::providers::{ErrorKind, ProviderError};

/// One of the fleet's domains, found by its slot name on one host.
pub struct SlotDomain {
    host: String,
    conn: Connect,
    dom: Domain,
    pub owner: Ownership,
    /// Where libvirt writes its serial output on the host.
    pub console_log: Option<String>,
    pub running: bool,
}

/// The domain named `slot` on the host of `config`, if it is there and is
/// `fleet`'s slot `slot`. A domain of that name that is not ours is an
/// error: hangar attaches to nothing it does not own.
pub fn find_slot_domain(
    config: &HostConfig,
    fleet: &str,
    slot: &str,
) -> Result<Option<SlotDomain>, ProviderError> {
    let host = config.name.as_str();
    let conn = connection::open(config, "connect to")?;
    let looked_up = conn
        .lookup_domain_by_name(slot)
        .map_err(|e| map_error(host, &format!("look up domain {slot}"), &e));
    let Some(dom) = optional(looked_up)? else {
        return Ok(None);
    };
    let text = dom
        .xml_desc(0)
        .map_err(|e| map_error(host, &format!("read domain {slot}"), &e))?;
    let facts = xml::parse_domain(&text)
        .map_err(|e| ProviderError::new(host, ErrorKind::Refused, format!("domain {slot}: {e}")))?;
    let owner = match facts.owner {
        Some(o) if o.fleet == fleet && o.slot == slot => o,
        _ => {
            return Err(ProviderError::new(
                host,
                ErrorKind::Refused,
                format!("domain {slot} is not fleet {fleet}'s slot {slot}: left alone"),
            ))
        }
    };
    let running = dom
        .is_active()
        .map_err(|e| map_error(host, &format!("state of domain {slot}"), &e))?;
    Ok(Some(SlotDomain {
        host: host.to_string(),
        conn,
        dom,
        owner,
        console_log: facts.console_log,
        running,
    }))
}

impl SlotDomain {
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The domain itself, for the guest agent's commands.
    pub(super) fn domain(&self) -> &Domain {
        &self.dom
    }

    /// Attach to the domain's serial console. `force`: take it over from
    /// another client attached to it (`virsh console --force`); without it
    /// a console someone else holds is refused.
    pub fn open_console(&self, force: bool) -> Result<ConsoleStream, ProviderError> {
        let slot = &self.owner.slot;
        let stream = Stream::new(&self.conn, 0)
            .map_err(|e| map_error(&self.host, "new console stream", &e))?;
        let mut flags = virt::sys::VIR_DOMAIN_CONSOLE_SAFE;
        if force {
            flags |= virt::sys::VIR_DOMAIN_CONSOLE_FORCE;
        }
        self.dom
            .open_console(None, &stream, flags)
            .map_err(|e| map_error(&self.host, &format!("open the console of {slot}"), &e))?;
        Ok(ConsoleStream {
            host: self.host.clone(),
            stream: Arc::new(stream),
        })
    }
}

/// An open console: bytes from the guest with [`ConsoleStream::recv`],
/// keystrokes to it with [`ConsoleStream::send`]. Clones share the stream,
/// so one thread can wait for output while another sends.
#[derive(Clone)]
pub struct ConsoleStream {
    host: String,
    stream: Arc<Stream>,
}

impl ConsoleStream {
    /// Wait for output. `Ok(0)`: the console closed (the domain stopped,
    /// or another client took it over).
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, ProviderError> {
        match self.stream.recv(buf) {
            Ok(n) => Ok(n.max(0) as usize),
            Err(e) => Err(map_error(&self.host, "console", &e)),
        }
    }

    pub fn send(&self, mut data: &[u8]) -> Result<(), ProviderError> {
        while !data.is_empty() {
            match self.stream.send(data) {
                Ok(n) if n > 0 => data = &data[n as usize..],
                Ok(_) => {
                    return Err(ProviderError::new(
                        &self.host,
                        ErrorKind::Transient,
                        "console: closed",
                    ))
                }
                Err(e) => return Err(map_error(&self.host, "console", &e)),
            }
        }
        Ok(())
    }

    /// Detach: a [`ConsoleStream::recv`] waiting on another thread returns.
    pub fn abort(&self) {
        // SAFETY: the pointer is the stream's own, alive while `self.stream`
        // is; aborting twice or after the end is an error libvirt reports,
        // not undefined behaviour.
        let _ = unsafe { virt::sys::virStreamAbort(self.stream.as_ptr()) };
    }
}
