//! Trust boundaries (issue 17): hangar never touches what is not its own,
//! never follows what it did not make, never runs what the fleet file
//! names, and keeps secrets out of logs and core dumps. Each test is named
//! after the defect it guards.
//!
//! The libvirt ones run against the real libvirtd at `qemu:///system`
//! (skipped when none answers, unless `HANGAR_REQUIRE_LIBVIRTD=1`), each in
//! a private pool with names prefixed `trust`.

#[path = "trust/input.rs"]
mod input;
#[path = "kit/host.rs"]
mod kit;
#[path = "trust/ownership.rs"]
mod ownership;
#[path = "trust/secrets.rs"]
mod secrets;
#[path = "trust/state.rs"]
mod state;
#[path = "kit/virsh.rs"]
mod virsh;
