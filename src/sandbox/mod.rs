//! The embedded default: libvirt's test driver persisted in a state file, and
//! the GitHub simulator served in-process. Runs anywhere, without root.

pub mod guest;
pub mod host;
