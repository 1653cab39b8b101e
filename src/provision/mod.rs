//! Guest bootstrap: the cloud-init user-data and meta-data that turn a stock
//! cloud image into one runner VM (user, Docker, the Actions runner, the
//! cache disk, job hooks, console markers).
//!
//! Decoupled from the fleet file: the engine maps a slot onto a [`Guest`].
//! The guest-side work lives in shell scripts under `guest/` that the
//! user-data writes to `/usr/local/lib/hangar/`; they read their settings
//! from `/etc/hangar/guest.env`, so no value is ever spliced into a script.
//! What the guest does, stage by stage, is in `docs/guest.md`.

mod cloud_config;

use cloud_config::{CloudConfig, FsSetup, User, WriteFile};
use serde::Serialize;

use crate::model::credential::RunnerCredential;
use crate::model::names::SEED_CREDENTIAL_FILE;
use crate::secret::Secret;

/// The serial of the cache disk in the domain XML (`<serial>`).
pub const CACHE_DISK_SERIAL: &str = "hangar-cache";
/// Where the guest finds the cache disk: by serial, not by device order.
pub const CACHE_DEVICE: &str = "/dev/disk/by-id/virtio-hangar-cache";
/// Where the guest finds the read-only runner disk
/// ([`crate::model::runner::RUNNER_DISK_SERIAL`]).
pub const RUNNER_DEVICE: &str = "/dev/disk/by-id/virtio-hangar-runner";
/// Where the guest finds the seed disk, whose
/// [`SEED_CREDENTIAL_FILE`] holds the runner's credential
/// ([`crate::model::names::SEED_DISK_SERIAL`]).
pub const SEED_DEVICE: &str = "/dev/disk/by-id/virtio-hangar-seed";
/// Every console marker starts with this.
pub const MARKER_PREFIX: &str = "hangar: ";

/// What one runner VM gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// Also the runner's name (runner names equal VM names).
    pub hostname: String,
    pub user: GuestUser,
    pub docker: DockerSource,
    pub runner: RunnerInstall,
    /// The runner's `--work` folder (relative to the runner's directory).
    pub work_folder: String,
    /// Passed to the runner exactly as given (GitHub adds its defaults).
    pub labels: Vec<String>,
    pub runner_group: String,
    /// One job, then the guest powers off.
    pub ephemeral: bool,
    pub cache: Option<GuestCache>,
    /// Foreign architectures to run by qemu user-mode emulation (`arm64`, ...).
    pub emulate: Vec<String>,
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestUser {
    /// `github` by default; no password.
    pub name: String,
    /// Passwordless sudo for everything (job code then has root).
    pub sudo: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerSource {
    /// The distribution's package (`docker.io` on Ubuntu and Debian).
    Distro,
    /// Docker's own repository (`docker-ce`, `docker-buildx-plugin`).
    DockerCe,
    /// Already in the image.
    Preinstalled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerInstall {
    /// actions/runner release `version` (no `v`), verified against `sha256`
    /// (of the linux tarball for the guest's architecture), unpacked in the
    /// user's home (`~/actions-runner`).
    Download { version: String, sha256: String },
    /// The release's tarball on the read-only runner disk (serial
    /// `hangar-runner`): `size` bytes from its start, checked against
    /// `sha256` before they are unpacked into `~/actions-runner`. Nothing in
    /// the guest downloads the runner.
    Volume {
        version: String,
        sha256: String,
        size: u64,
    },
    /// A runner directory already in the image.
    Preinstalled { path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestCache {
    pub mount_path: String,
    /// The job-started hook prunes when use is above this.
    pub prune_above_percent: u8,
    /// Docker's data-root at `<mount_path>/docker`.
    pub docker_data_root: bool,
    pub size_bytes: u64,
}

/// A line the guest prints on its serial console, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marker {
    UserOk,
    DockerOk,
    /// The cache disk's size in bytes.
    CacheMounted(u64),
    /// The runner's name and labels (comma-separated).
    RunnerStarted {
        name: String,
        labels: String,
    },
    JobStarted,
    JobFinished,
    /// The stage that failed, with any detail.
    Failed(String),
}

impl Marker {
    /// The marker in one console line, if it carries one. Console lines may
    /// carry noise before the prefix (a journal prefix, a carriage return).
    pub fn parse(line: &str) -> Option<Marker> {
        let rest = &line[line.find(MARKER_PREFIX)? + MARKER_PREFIX.len()..];
        let rest = rest.trim_end();
        if rest == "user ok" {
            return Some(Marker::UserOk);
        }
        if rest == "docker ok" {
            return Some(Marker::DockerOk);
        }
        if rest == "job started" {
            return Some(Marker::JobStarted);
        }
        if rest == "job finished" {
            return Some(Marker::JobFinished);
        }
        if let Some(size) = rest.strip_prefix("cache mounted ") {
            return size.trim().parse().ok().map(Marker::CacheMounted);
        }
        if let Some(runner) = rest.strip_prefix("runner started ") {
            let (name, labels) = runner.split_once(' ').unwrap_or((runner, ""));
            return Some(Marker::RunnerStarted {
                name: name.to_string(),
                labels: labels.to_string(),
            });
        }
        rest.strip_prefix("failed ")
            .map(|stage| Marker::Failed(stage.to_string()))
    }
}

/// The user-data for one VM generation. It names the credential's kind
/// (and a registration's URL) but not the credential: that travels beside it
/// on the seed disk ([`credential_file`]), so none of the copies cloud-init
/// keeps on the root disk carries a secret.
pub fn user_data(guest: &Guest, credential: &RunnerCredential) -> String {
    let credential = match credential {
        RunnerCredential::Jit { .. } => Credential::Jit,
        RunnerCredential::Registration { url, .. } => Credential::Registration { url },
    };
    render(guest, &credential)
}

/// The seed's credential file: the JIT config, or the registration token.
pub fn credential_file(credential: &RunnerCredential) -> Secret<String> {
    match credential {
        RunnerCredential::Jit { config, .. } => config.clone(),
        RunnerCredential::Registration { token, .. } => token.clone(),
    }
}

/// Placeholder for the registration URL in [`user_data_redacted`].
pub const REGISTRATION_URL_PLACEHOLDER: &str = "<registration-url>";

/// The user-data as [`user_data`] renders it, for `hangar render
/// user-data`: `ephemeral` picks the credential kind (a JIT config, or a
/// registration URL and token for `config.sh`), with a placeholder for the
/// registration URL.
pub fn user_data_redacted(guest: &Guest, ephemeral: bool) -> String {
    let credential = if ephemeral {
        Credential::Jit
    } else {
        Credential::Registration {
            url: REGISTRATION_URL_PLACEHOLDER,
        }
    };
    render(guest, &credential)
}

/// NoCloud meta-data. A new generation is a new instance-id, so cloud-init
/// provisions the replacement VM afresh.
pub fn meta_data(vm_name: &str, generation: u64) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "kebab-case")]
    struct MetaData<'a> {
        instance_id: String,
        local_hostname: &'a str,
    }
    let meta = MetaData {
        instance_id: format!("{vm_name}-{generation}"),
        local_hostname: vm_name,
    };
    serde_saphyr::to_string(&meta).expect("meta-data serializes to YAML")
}

/// The credential's kind, as the user-data names it.
enum Credential<'a> {
    Jit,
    Registration { url: &'a str },
}

const SCRIPT_DIR: &str = "/usr/local/lib/hangar";
const GUEST_ENV: &str = "/etc/hangar/guest.env";
/// Where `provision.sh` puts the seed's credential: a tmpfs, root only.
const CREDENTIAL_FILE: &str = "/run/hangar/credential";
const RUNNER_UNIT: &str = "/etc/systemd/system/hangar-runner.service";

/// The guest's scripts: (name under SCRIPT_DIR, contents).
const SCRIPTS: &[(&str, &str)] = &[
    ("say", include_str!("guest/say")),
    ("job-marker", include_str!("guest/job-marker")),
    ("job-started.sh", include_str!("guest/job-started.sh")),
    ("job-completed.sh", include_str!("guest/job-completed.sh")),
    ("runner-start", include_str!("guest/runner-start")),
    ("runner-run", include_str!("guest/runner-run")),
    ("runner-exited", include_str!("guest/runner-exited")),
    ("scrub-secrets", include_str!("guest/scrub-secrets")),
    ("drain-request", include_str!("guest/drain-request")),
    ("drain-stop", include_str!("guest/drain-stop")),
    ("cache-prune", include_str!("guest/cache-prune")),
    ("provision.sh", include_str!("guest/provision.sh")),
];

fn render(guest: &Guest, credential: &Credential<'_>) -> String {
    let mut packages = Vec::new();
    if guest.docker == DockerSource::Distro {
        packages.push("docker.io".to_string());
    }
    if !guest.emulate.is_empty() {
        packages.extend(["qemu-user-static".to_string(), "binfmt-support".to_string()]);
    }
    // openssh-server (for `sshAuthorizedKeys`) is installed by provision.sh
    // only where the image lacks it, as the guest agent is: an image that
    // carries it needs no package network for it.

    let user = User {
        name: guest.user.name.clone(),
        gecos: "GitHub Actions runner".to_string(),
        shell: "/bin/bash".to_string(),
        lock_passwd: true,
        groups: vec!["docker".to_string()],
        sudo: guest
            .user
            .sudo
            .then(|| "ALL=(ALL) NOPASSWD:ALL".to_string()),
        ssh_authorized_keys: guest.ssh_authorized_keys.clone(),
    };

    let (fs_setup, mounts) = match &guest.cache {
        Some(cache) => (
            vec![FsSetup {
                label: CACHE_DISK_SERIAL.to_string(),
                filesystem: "ext4".to_string(),
                device: CACHE_DEVICE.to_string(),
                // `auto`, not `none`: with `none` cloud-init formats the raw
                // disk on every new instance whatever `overwrite` says
                // (canonical/cloud-init#3902), so each VM generation wiped
                // the cache. `auto` reuses an ext4 labelled hangar-cache and
                // formats only a disk without a file system.
                partition: "auto".to_string(),
                overwrite: false,
            }],
            vec![[
                CACHE_DEVICE.to_string(),
                cache.mount_path.clone(),
                "ext4".to_string(),
                "defaults,nofail,x-systemd.device-timeout=30s".to_string(),
                "0".to_string(),
                "2".to_string(),
            ]],
        ),
        None => (Vec::new(), Vec::new()),
    };

    let mut write_files = vec![WriteFile::new(
        GUEST_ENV,
        "0644",
        guest_env(guest, credential),
    )];
    write_files.extend(
        SCRIPTS
            .iter()
            .map(|(name, body)| WriteFile::new(&format!("{SCRIPT_DIR}/{name}"), "0755", *body)),
    );
    write_files.push(WriteFile::new(
        "/etc/sudoers.d/hangar-job-marker",
        "0440",
        format!(
            "{} ALL=(root) NOPASSWD: {SCRIPT_DIR}/job-marker\n",
            guest.user.name
        ),
    ));
    write_files.push(WriteFile::new(
        RUNNER_UNIT,
        "0644",
        runner_unit(guest, credential),
    ));
    if guest.cache.is_some() {
        // The cache is kept within budget during long jobs too, not only
        // when one starts.
        write_files.push(WriteFile::new(
            "/etc/systemd/system/hangar-prune.service",
            "0644",
            format!(
                "[Unit]\nDescription=Keep hangar's cache disk within its budget\n\n\
                 [Service]\nType=oneshot\nExecStart={SCRIPT_DIR}/cache-prune\n"
            ),
        ));
        write_files.push(WriteFile::new(
            "/etc/systemd/system/hangar-prune.timer",
            "0644",
            "[Unit]\nDescription=Prune hangar's cache disk every 15 minutes\n\n\
             [Timer]\nOnBootSec=15min\nOnUnitActiveSec=15min\n\n\
             [Install]\nWantedBy=timers.target\n"
                .to_string(),
        ));
    }
    if let Some(cache) = guest.cache.as_ref().filter(|c| c.docker_data_root) {
        let daemon = serde_json::json!({ "data-root": format!("{}/docker", cache.mount_path) });
        write_files.push(WriteFile::new(
            "/etc/docker/daemon.json",
            "0644",
            format!("{daemon:#}\n"),
        ));
    }

    let config = CloudConfig {
        hostname: guest.hostname.clone(),
        manage_etc_hosts: true,
        manual_cache_clean: true,
        ssh_pwauth: (!guest.ssh_authorized_keys.is_empty()).then_some(false),
        users: vec![user],
        fs_setup,
        mounts,
        package_update: !packages.is_empty(),
        packages,
        write_files,
        runcmd: vec![vec![format!("{SCRIPT_DIR}/provision.sh")]],
    };
    cloud_config::to_user_data(&config)
}

fn runner_dir(guest: &Guest) -> String {
    match &guest.runner {
        RunnerInstall::Download { .. } | RunnerInstall::Volume { .. } => {
            format!("/home/{}/actions-runner", guest.user.name)
        }
        RunnerInstall::Preinstalled { path } => path.clone(),
    }
}

/// `/etc/hangar/guest.env`: the settings the guest scripts source. No secret
/// goes here (the file is world-readable); values are single-quoted for sh.
fn guest_env(guest: &Guest, credential: &Credential<'_>) -> String {
    let (install, version, sha256, size) = match &guest.runner {
        RunnerInstall::Download { version, sha256 } => {
            ("download", version.as_str(), sha256.as_str(), String::new())
        }
        RunnerInstall::Volume {
            version,
            sha256,
            size,
        } => (
            "volume",
            version.as_str(),
            sha256.as_str(),
            size.to_string(),
        ),
        RunnerInstall::Preinstalled { .. } => ("preinstalled", "", "", String::new()),
    };
    let (kind, url) = match credential {
        Credential::Jit => ("jit", ""),
        Credential::Registration { url } => ("registration", *url),
    };
    let docker = match guest.docker {
        DockerSource::Distro => "distro",
        DockerSource::DockerCe => "docker-ce",
        DockerSource::Preinstalled => "preinstalled",
    };
    let cache = guest.cache.as_ref();
    let vars: [(&str, String); 22] = [
        ("HANGAR_NAME", guest.hostname.clone()),
        ("HANGAR_USER", guest.user.name.clone()),
        ("HANGAR_LABELS", guest.labels.join(",")),
        ("HANGAR_RUNNER_GROUP", guest.runner_group.clone()),
        ("HANGAR_WORK", guest.work_folder.clone()),
        (
            "HANGAR_EPHEMERAL",
            bit(guest.ephemeral || matches!(credential, Credential::Jit)),
        ),
        ("HANGAR_DOCKER", docker.to_string()),
        ("HANGAR_RUNNER_INSTALL", install.to_string()),
        ("HANGAR_RUNNER_VERSION", version.to_string()),
        ("HANGAR_RUNNER_SHA256", sha256.to_string()),
        ("HANGAR_RUNNER_SIZE", size),
        ("HANGAR_RUNNER_DEVICE", RUNNER_DEVICE.to_string()),
        ("HANGAR_RUNNER_DIR", runner_dir(guest)),
        ("HANGAR_CREDENTIAL", kind.to_string()),
        ("HANGAR_RUNNER_URL", url.to_string()),
        ("HANGAR_CACHE_DEVICE", CACHE_DEVICE.to_string()),
        ("HANGAR_SEED_DEVICE", SEED_DEVICE.to_string()),
        ("HANGAR_SEED_CREDENTIAL", SEED_CREDENTIAL_FILE.to_string()),
        (
            "HANGAR_CACHE_DIR",
            cache.map(|c| c.mount_path.clone()).unwrap_or_default(),
        ),
        (
            "HANGAR_PRUNE_ABOVE",
            cache
                .map(|c| c.prune_above_percent)
                .unwrap_or(100)
                .to_string(),
        ),
        (
            "HANGAR_DOCKER_DATA_ROOT",
            bit(cache.is_some_and(|c| c.docker_data_root)),
        ),
        ("HANGAR_SSH", bit(!guest.ssh_authorized_keys.is_empty())),
    ];
    let mut out =
        String::from("# Written by hangar's user-data; read by /usr/local/lib/hangar/*.\n");
    for (key, value) in vars {
        out.push_str(&format!("{key}={}\n", sh_quote(&value)));
    }
    out.push_str(&format!(
        "HANGAR_EMULATE={}\n",
        sh_quote(&guest.emulate.join(" "))
    ));
    out
}

fn bit(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// One sh word that stands for `s` exactly.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The runner's systemd unit. Ephemeral: one run, then the guest powers off
/// whether the runner succeeded or failed (the domain ends, the engine
/// replaces it). Persistent: restarted forever, enabled for reboots.
/// Ordered after cloud-final, so the runner (and an ephemeral poweroff) waits
/// until cloud-init is done.
fn runner_unit(guest: &Guest, credential: &Credential<'_>) -> String {
    let jit = matches!(credential, Credential::Jit);
    let one_job = guest.ephemeral || jit;
    let mut unit = String::from(
        "[Unit]\n\
         Description=GitHub Actions runner (hangar)\n\
         After=cloud-final.service docker.service\n",
    );
    if one_job {
        unit.push_str("SuccessAction=poweroff\nFailureAction=poweroff\n");
    } else {
        // A drained runner (see `drain-stop`) never starts again.
        unit.push_str("ConditionPathExists=!/run/hangar/drain\n");
    }
    unit.push_str(&format!(
        "\n[Service]\n\
         User={user}\n\
         ExecStartPre=+{SCRIPT_DIR}/runner-start\n\
         ExecStart={SCRIPT_DIR}/runner-run\n\
         ExecStartPost=+{SCRIPT_DIR}/scrub-secrets\n\
         ExecStopPost=+{SCRIPT_DIR}/runner-exited\n\
         KillMode=process\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=5min\n\
         StandardOutput=tty\n\
         StandardError=tty\n\
         TTYPath=/dev/console\n",
        user = guest.user.name
    ));
    if jit {
        // systemd copies the root-only file (on a tmpfs, taken from the
        // seed by `provision.sh`) into a credential only this service can
        // read; the file itself goes once the runner started
        // (`scrub-secrets`).
        unit.push_str(&format!("LoadCredential=jitconfig:{CREDENTIAL_FILE}\n"));
    }
    if !one_job {
        unit.push_str("Restart=always\nRestartSec=10\n\n[Install]\nWantedBy=multi-user.target\n");
    }
    unit
}

#[cfg(test)]
mod tests;
