//! libvirt hypervisor over the virt crate.
