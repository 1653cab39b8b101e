//! Names hangar gives to what it makes: slots (= VMs = runners), volumes,
//! disk serials, networks. Deterministic, so that the world can be read back.

/// The label every runner of a fleet carries besides the pool's labels. A
/// runner is ours only if its name is one of our slot names *and* it carries
/// this label, so a foreign runner that happens to share a name is left alone.
pub fn ownership_label(fleet: &str) -> String {
    format!("hangar-{fleet}")
}

/// The runner and VM name of a slot: `<fleet>-<pool>-<index>`.
pub fn slot_name(fleet: &str, pool: &str, index: u32) -> String {
    format!("{fleet}-{pool}-{index}")
}

/// The pool and index of a slot name of `fleet`, if `name` has the shape
/// `<fleet>-<pool>-<index>` that [`slot_name`] produces (canonical index, no
/// leading zeros), so that `slot_name(fleet, pool, index) == name`.
pub fn parse_slot_name<'a>(fleet: &str, name: &'a str) -> Option<(&'a str, u32)> {
    let rest = name.strip_prefix(fleet)?.strip_prefix('-')?;
    let (pool, index) = rest.rsplit_once('-')?;
    if pool.is_empty() || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if index.len() > 1 && index.starts_with('0') {
        return None;
    }
    Some((pool, index.parse().ok()?))
}

/// Serial of the cache disk: the guest finds it at
/// `/dev/disk/by-id/virtio-hangar-cache`.
pub const CACHE_DISK_SERIAL: &str = "hangar-cache";
/// Serial of the NoCloud seed disk: the guest finds it at
/// `/dev/disk/by-id/virtio-hangar-seed`.
pub const SEED_DISK_SERIAL: &str = "hangar-seed";
/// The file on the seed disk, beside `user-data` and `meta-data`, that holds
/// the runner's credential (a JIT config or a registration token). cloud-init
/// never reads it, so none of cloud-init's copies of the user-data on the
/// root disk carries a secret; the guest copies it to a tmpfs.
pub const SEED_CREDENTIAL_FILE: &str = "hangar-credential";

/// Root overlay of one VM generation.
pub fn root_volume_name(slot: &str, generation: u64) -> String {
    format!("{slot}-g{generation}-root.qcow2")
}

/// The slot's cache volume, kept across generations.
pub fn cache_volume_name(slot: &str) -> String {
    format!("{slot}-cache.qcow2")
}

/// The NoCloud seed of one VM generation (carries secrets until removed).
pub fn seed_volume_name(slot: &str, generation: u64) -> String {
    format!("{slot}-g{generation}-seed.iso")
}

/// File name of a generation's serial console log inside the console dir.
pub fn console_log_name(slot: &str, generation: u64) -> String {
    format!("{slot}-g{generation}.console.log")
}

/// The generation of `slot` whose console log file is called `file_name`
/// ([`console_log_name`] read back).
pub fn console_log_generation(slot: &str, file_name: &str) -> Option<u64> {
    let generation = file_name
        .strip_suffix(".console.log")?
        .strip_prefix(slot)?
        .strip_prefix("-g")?;
    if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = generation.parse().ok()?;
    (console_log_name(slot, n) == file_name).then_some(n)
}

/// The default libvirt network of a fleet's `isolated` mode.
pub fn default_network_name(fleet: &str) -> String {
    format!("hangar-{fleet}")
}

/// The default nwfilter of a fleet's `isolated` mode.
pub fn default_filter_name(fleet: &str) -> String {
    format!("hangar-isolated-{fleet}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_log_names_read_back_to_their_generation() {
        assert_eq!(
            console_log_generation("f-p-1", &console_log_name("f-p-1", 12)),
            Some(12)
        );
        // Another slot whose name extends this one's is not this slot's.
        assert_eq!(
            console_log_generation("f-p-1", "f-p-10-g2.console.log"),
            None
        );
        assert_eq!(
            console_log_generation("f-p-1", "f-p-1-g02.console.log"),
            None
        );
        assert_eq!(console_log_generation("f-p-1", "f-p-1-g.console.log"), None);
        assert_eq!(console_log_generation("f-p-1", "f-p-1-g2.log"), None);
    }
}
