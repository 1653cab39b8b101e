//! The vocabulary every layer shares: names, ownership and its XML codec,
//! host facts, the isolated network's subnet, the guest's console markers,
//! runner credentials. Pure: no I/O, no async, no provider crate; `fleet`,
//! `plan`, `provision` and the providers all build on it.

pub mod credential;
pub mod guest;
pub mod host;
pub mod names;
pub mod network;
pub mod ownership;
pub mod runner;
pub mod tree;
pub mod units;
pub mod xml;

pub use credential::RunnerCredential;
pub use guest::GuestStage;
pub use host::{CpuModel, DirectBoot, DomainType, HostFacts, NetworkAttachment};
pub use names::{ownership_label, parse_slot_name, slot_name};
pub use network::{IsolatedNetwork, Subnet};
pub use ownership::{Ownership, OwnershipError, SpecHash, VmShape};
