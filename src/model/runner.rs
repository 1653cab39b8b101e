//! The actions/runner release a guest installs, as hangar hands it over: a
//! tarball fetched and verified once on hangar's side, put on each host as
//! one read-only volume per version and architecture, attached to every VM
//! that installs it. Pure: names and types, no I/O.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Serial of the read-only runner disk: the guest finds it at
/// `/dev/disk/by-id/virtio-hangar-runner`.
pub const RUNNER_DISK_SERIAL: &str = "hangar-runner";

/// One `actions-runner-linux-<arch>-<version>.tar.gz` release asset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunnerTarball {
    /// No leading `v`: `2.330.0`.
    pub version: String,
    /// `x64`, `arm64` or `arm`, as the asset names it.
    pub arch: String,
    /// 64 lowercase hex digits.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// A [`RunnerTarball`] verified and kept in hangar's state directory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LocalTarball {
    pub tarball: RunnerTarball,
    pub path: PathBuf,
}

impl RunnerTarball {
    /// The release asset's file name.
    pub fn file_name(&self) -> String {
        format!("actions-runner-linux-{}-{}.tar.gz", self.arch, self.version)
    }
}

/// The fleet's volume holding `tarball` on a host:
/// `<fleet>-runner-<version>-<arch>.tar.gz`. A version has dots and a slot
/// index none, so no slot volume (`<fleet>-<pool>-<index>-…`) reads as one.
pub fn runner_volume_name(fleet: &str, tarball: &RunnerTarball) -> String {
    format!("{fleet}-runner-{}-{}.tar.gz", tarball.version, tarball.arch)
}

/// `(version, arch)` of a fleet's runner volume name, `None` for any other
/// name.
pub fn parse_runner_volume<'a>(fleet: &str, name: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = name
        .strip_prefix(fleet)?
        .strip_prefix("-runner-")?
        .strip_suffix(".tar.gz")?;
    let (version, arch) = rest.rsplit_once('-')?;
    let version_ok = version.contains('.')
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (version_ok && matches!(arch, "x64" | "arm64" | "arm")).then_some((version, arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> RunnerTarball {
        RunnerTarball {
            version: "2.330.0".into(),
            arch: "x64".into(),
            sha256: "0".repeat(64),
            size: 1,
        }
    }

    #[test]
    fn runner_volume_names_round_trip_and_slot_volumes_are_not_runner_volumes() {
        let name = runner_volume_name("ci", &t());
        assert_eq!(name, "ci-runner-2.330.0-x64.tar.gz");
        assert_eq!(parse_runner_volume("ci", &name), Some(("2.330.0", "x64")));
        assert_eq!(parse_runner_volume("other", &name), None);
        for not_ours in [
            "ci-runner-0-cache.qcow2",
            "ci-runner-0-g1-root.qcow2",
            "ci-runner-2-x64.tar.gz",
            "ci-runner-2.330.0-riscv.tar.gz",
            "ci-runner-2.330.0-x64.tar.gz.partial",
        ] {
            assert_eq!(parse_runner_volume("ci", not_ours), None, "{not_ours}");
        }
        assert_eq!(t().file_name(), "actions-runner-linux-x64-2.330.0.tar.gz");
    }
}
