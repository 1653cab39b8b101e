//! The runner application (actions/runner) as hangar hands it to guests:
//! which release, which tarball, and whether GitHub still accepts that
//! release. Pure: the releases API client (`providers::github::releases`)
//! and the tarball store (`runner_dist`) build on these types.

use std::cmp::Ordering;
use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};

/// Serial of the read-only runner disk: the guest finds it at
/// `/dev/disk/by-id/virtio-hangar-runner`.
pub const RUNNER_DISK_SERIAL: &str = "hangar-runner";

/// One runner tarball, `actions-runner-linux-<arch>-<version>.tar.gz`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct RunnerTarball {
    /// `2.331.0`.
    pub version: String,
    /// GitHub's spelling: `x64`, `arm64` or `arm`.
    pub arch: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

impl RunnerTarball {
    /// The release asset's file name.
    pub fn file_name(&self) -> String {
        tarball_name(&self.arch, &self.version)
    }
}

/// `actions-runner-linux-<arch>-<version>.tar.gz`, the name actions/runner
/// gives its Linux release assets.
pub fn tarball_name(arch: &str, version: &str) -> String {
    format!("actions-runner-linux-{arch}-{version}.tar.gz")
}

/// The architecture of every guest hangar defines (the domain XML asks for
/// `x86_64`), in GitHub's spelling: the runner tarball and the label.
pub const GUEST_ARCH: &str = "x64";

/// The labels GitHub gives a runner that `config.sh` registers (without
/// `--no-default-labels`): `self-hosted`, the OS and the architecture.
/// hangar sends them explicitly when it mints a JIT runner, because a JIT
/// runner gets the labels of its `generate-jitconfig` request (the request's
/// `labels` are "the names of the custom labels to add to the runner",
/// GitHub's REST description), and public reports disagree on whether GitHub
/// adds these by itself.
pub fn default_labels(arch: &str) -> [String; 3] {
    ["self-hosted".into(), "linux".into(), arch.to_string()]
}

/// A tarball on hangar's machine whose SHA-256 was checked.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct LocalTarball {
    pub tarball: RunnerTarball,
    pub path: PathBuf,
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
    let version_ok = version.contains('.') && RunnerVersion::parse(version).is_some();
    (version_ok && !version.starts_with('v') && matches!(arch, "x64" | "arm64" | "arm"))
        .then_some((version, arch))
}

/// A runner release number, `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunnerVersion(pub u64, pub u64, pub u64);

impl RunnerVersion {
    /// `2.330.0` or `v2.330.0` (the release tag).
    pub fn parse(text: &str) -> Option<RunnerVersion> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let mut parts = text.split('.').map(|p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse::<u64>().ok()
            } else {
                None
            }
        });
        let v = RunnerVersion(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }
}

impl fmt::Display for RunnerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Which runner release a pool asks for (`runner.version` and
/// `runner.sha256` of the fleet file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerChoice {
    /// The newest release, re-checked hourly; its digest is GitHub's.
    Latest,
    /// That release; `sha256` (lowercase hex) when pinned in the file,
    /// else the release asset's digest.
    Pinned {
        version: RunnerVersion,
        sha256: Option<String>,
    },
}

/// The oldest runner GitHub lets register on github.com.
pub const MINIMUM_RUNNER: RunnerVersion = RunnerVersion(2, 329, 0);

/// How long a runner may stay on a release once a newer one is published.
pub const UPDATE_WINDOW_DAYS: i64 = 30;

/// A published release, as far as the version window cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedRelease {
    pub version: RunnerVersion,
    pub published_at: DateTime<Utc>,
}

/// Whether GitHub keeps sending jobs to runners of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionVerdict {
    Ok,
    /// Runners of this version get (or will soon stop getting) no jobs.
    Warning(String),
    /// GitHub refuses to register runners of this version.
    Refused(String),
}

/// GitHub's rules for runners on github.com ("Self-hosted runners must be
/// updated within 30 days of a new release"; "runner version 2.329.0 or
/// later is required to register"): a version below [`MINIMUM_RUNNER`] is
/// refused; once a newer release is out, the runner has
/// [`UPDATE_WINDOW_DAYS`] from that release's publication, and a warning
/// says when that ends (or ended).
pub fn version_verdict(
    version: RunnerVersion,
    releases: &[PublishedRelease],
    now: DateTime<Utc>,
) -> VersionVerdict {
    if version < MINIMUM_RUNNER {
        return VersionVerdict::Refused(format!(
            "runner {version} is below {MINIMUM_RUNNER}, the oldest GitHub lets register"
        ));
    }
    // The clock starts with the first release after ours.
    let Some(next) = releases
        .iter()
        .filter(|r| r.version > version)
        .min_by(|a, b| match a.published_at.cmp(&b.published_at) {
            Ordering::Equal => a.version.cmp(&b.version),
            other => other,
        })
    else {
        return VersionVerdict::Ok;
    };
    let deadline = next.published_at + Duration::days(UPDATE_WINDOW_DAYS);
    let day = |t: DateTime<Utc>| t.format("%Y-%m-%d").to_string();
    if now >= deadline {
        VersionVerdict::Warning(format!(
            "{version} is older than GitHub's {UPDATE_WINDOW_DAYS}-day window: {} was published on {}; \
             runners stopped receiving jobs on {}",
            next.version,
            day(next.published_at),
            day(deadline)
        ))
    } else {
        VersionVerdict::Warning(format!(
            "{version} is not the newest runner: {} was published on {}; \
             runners stop receiving jobs on {}",
            next.version,
            day(next.published_at),
            day(deadline)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_volume_names_round_trip_and_slot_volumes_are_not_runner_volumes() {
        let t = RunnerTarball {
            version: "2.330.0".into(),
            arch: "x64".into(),
            sha256: "0".repeat(64),
            size: 1,
        };
        let name = runner_volume_name("ci", &t);
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
    }

    fn at(day: &str) -> DateTime<Utc> {
        format!("{day}T12:00:00Z").parse().unwrap()
    }

    fn rel(v: &str, day: &str) -> PublishedRelease {
        PublishedRelease {
            version: RunnerVersion::parse(v).unwrap(),
            published_at: at(day),
        }
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(
            RunnerVersion::parse("v2.330.0"),
            Some(RunnerVersion(2, 330, 0))
        );
        assert!(RunnerVersion::parse("2.330").is_none());
        assert!(RunnerVersion::parse("2.330.0.1").is_none());
        assert!(RunnerVersion::parse("2.x.0").is_none());
        assert!(RunnerVersion(2, 330, 0) > RunnerVersion(2, 99, 9));
        assert_eq!(RunnerVersion(2, 330, 1).to_string(), "2.330.1");
    }

    #[test]
    fn window_verdicts() {
        let releases = [
            rel("2.329.0", "2026-01-10"),
            rel("2.330.0", "2026-02-10"),
            rel("2.331.0", "2026-03-10"),
        ];
        let v = |s: &str| RunnerVersion::parse(s).unwrap();
        let now = at("2026-03-20");
        assert_eq!(
            version_verdict(v("2.331.0"), &releases, now),
            VersionVerdict::Ok
        );
        assert_eq!(
            version_verdict(v("2.330.0"), &releases, now),
            VersionVerdict::Warning(
                "2.330.0 is not the newest runner: 2.331.0 was published on 2026-03-10; \
                 runners stop receiving jobs on 2026-04-09"
                    .into()
            )
        );
        assert_eq!(
            version_verdict(v("2.329.0"), &releases, now),
            VersionVerdict::Warning(
                "2.329.0 is older than GitHub's 30-day window: 2.330.0 was published on 2026-02-10; \
                 runners stopped receiving jobs on 2026-03-12"
                    .into()
            )
        );
        assert!(matches!(
            version_verdict(v("2.328.0"), &releases, now),
            VersionVerdict::Refused(m) if m.contains("below 2.329.0")
        ));
        // A version newer than everything listed (a pin ahead of the cache).
        assert_eq!(
            version_verdict(v("2.332.0"), &releases, now),
            VersionVerdict::Ok
        );
    }
}
