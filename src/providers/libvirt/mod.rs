//! libvirt hypervisor over the virt crate.

pub mod console;
pub mod seed;
mod tree;
pub mod xml;
