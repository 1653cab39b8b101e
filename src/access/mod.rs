//! Reaching one slot of the fleet from the operator's shell, beside the
//! engine: the slot's hosts as the file names them, its console logs on
//! this machine, its domain on a host, its live serial console (read only
//! for `logs --follow`, both ways for `console`), and `init`'s survey of a
//! host. Nothing here changes the world, and nothing here renders: the
//! CLI prints what these find, through an [`Output`] of its choosing.

pub mod console;
pub mod log;
pub mod prune;
pub mod slot;

pub use crate::providers::libvirt::serial::SlotDomain;
pub use crate::providers::libvirt::survey::{survey, Survey};
pub use crate::providers::libvirt::HostConfig;
use crate::providers::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no slot {slot} in fleet {fleet}; slots: {}", slots.join(", "))]
    NoSlot {
        slot: String,
        fleet: String,
        slots: Vec<String>,
    },
    /// The slot's console or its log cannot be had (not there, not
    /// readable, or on another machine: the message says where).
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Where a guest's console bytes go. A closed output (a pipe whose reader
/// left) ends what writes into it.
pub trait Output {
    fn write(&mut self, bytes: &[u8]);
    fn flush(&mut self);
    fn closed(&self) -> bool;
    /// The end of the output: flush, and whatever ends it cleanly.
    fn finish(&mut self) {
        self.flush();
    }
}
