//! The subset of cloud-init's cloud-config that hangar writes, as typed
//! structs serialized to YAML (never YAML assembled from strings).

use serde::Serialize;

#[derive(Debug, Serialize)]
pub(crate) struct CloudConfig {
    pub hostname: String,
    /// Writes the hostname into /etc/hosts: without it `sudo` (used by the
    /// job hooks) waits on a DNS lookup that a guest without network never
    /// answers.
    pub manage_etc_hosts: bool,
    /// Keep the instance when the seed volume is gone: a persistent runner
    /// VM that reboots after hangar removed its seed must not look like a new
    /// instance (cloud-init merges this from the instance's own config).
    pub manual_cache_clean: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_pwauth: Option<bool>,
    pub users: Vec<User>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fs_setup: Vec<FsSetup>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<[String; 6]>,
    #[serde(skip_serializing_if = "is_false")]
    pub package_update: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    pub write_files: Vec<WriteFile>,
    /// Each command is an argv list, run without a shell.
    pub runcmd: Vec<Vec<String>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Serialize)]
pub(crate) struct User {
    pub name: String,
    pub gecos: String,
    pub shell: String,
    pub lock_passwd: bool,
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sudo: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct FsSetup {
    pub label: String,
    pub filesystem: String,
    pub device: String,
    pub partition: String,
    /// false: a disk that already carries a filesystem is left as it is, so
    /// the cache survives VM replacements.
    pub overwrite: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct WriteFile {
    pub path: String,
    pub owner: String,
    pub permissions: String,
    pub content: String,
}

impl WriteFile {
    pub fn new(path: &str, permissions: &str, content: impl Into<String>) -> Self {
        WriteFile {
            path: path.to_string(),
            owner: "root:root".to_string(),
            permissions: permissions.to_string(),
            content: content.into(),
        }
    }
}

/// `#cloud-config` followed by the YAML document.
pub(crate) fn to_user_data(config: &CloudConfig) -> String {
    // Strings, booleans, lists and maps of them always serialize.
    let yaml = serde_saphyr::to_string(config).expect("cloud-config serializes to YAML");
    format!("#cloud-config\n{yaml}")
}
