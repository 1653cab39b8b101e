//! The simulator's state: the world GitHub would hold (runners, groups,
//! issued tokens; persisted), and the simulator's own knobs (faults,
//! latency, rate budget, counters; not persisted).

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a control call or an API call refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
}

/// Everything GitHub would remember; this is what the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimWorld {
    pub next_runner_id: u64,
    pub next_label_id: u64,
    pub next_group_id: u64,
    /// By scope key: `repos/OWNER/REPO` or `orgs/ORG`, lowercased (GitHub
    /// treats both names case-insensitively).
    pub scopes: BTreeMap<String, SimScope>,
    /// Registration, remove and installation tokens issued and not expired.
    pub tokens: Vec<IssuedToken>,
    /// Releases by `owner/repo` (lowercased), newest first.
    #[serde(default)]
    pub releases: BTreeMap<String, Vec<super::releases::SimRelease>>,
    #[serde(default)]
    pub next_release_id: u64,
    /// Workflow runs by id, each with its jobs.
    #[serde(default)]
    pub runs: BTreeMap<u64, super::jobs::SimRun>,
    #[serde(default)]
    pub next_run_id: u64,
    #[serde(default)]
    pub next_job_id: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimScope {
    pub runners: BTreeMap<u64, SimRunner>,
    pub groups: Vec<SimGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRunner {
    pub id: u64,
    pub name: String,
    pub os: String,
    /// `online` or `offline`.
    pub status: String,
    pub busy: bool,
    pub ephemeral: bool,
    pub runner_group_id: u64,
    pub labels: Vec<SimLabel>,
    /// SHA-256 (hex) of the `encoded_jit_config` minted for this runner, so
    /// a test can check what a guest received without the sim keeping it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jit_config_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimLabel {
    pub id: u64,
    pub name: String,
    /// `read-only` or `custom`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimGroup {
    pub id: u64,
    pub name: String,
    pub default: bool,
    /// `all`, `selected` or `private`.
    #[serde(default = "all")]
    pub visibility: String,
    #[serde(default)]
    pub allows_public_repositories: bool,
    #[serde(default)]
    pub restricted_to_workflows: bool,
    #[serde(default)]
    pub selected_workflows: Vec<String>,
    /// Repository ids allowed when `visibility` is `selected`.
    #[serde(default)]
    pub selected_repository_ids: Vec<u64>,
}

fn all() -> String {
    "all".into()
}

impl SimGroup {
    pub fn new(id: u64, name: &str, default: bool) -> Self {
        SimGroup {
            id,
            name: name.to_string(),
            default,
            visibility: all(),
            allows_public_repositories: false,
            restricted_to_workflows: false,
            selected_workflows: Vec::new(),
            selected_repository_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Registration,
    Remove,
    Installation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub token: String,
    pub kind: TokenKind,
    /// The scope key a registration or remove token is good for.
    pub scope: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// How to register a runner the way a persistent `config.sh` would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRunner {
    /// `repos/OWNER/REPO` or `orgs/ORG`.
    pub scope: String,
    pub name: String,
    #[serde(default)]
    pub labels: Vec<String>,
    /// A registration token issued for `scope` (`config.sh --token`).
    pub token: String,
    /// Runner group name (`--runnergroup`); the default group when absent.
    #[serde(default)]
    pub group: Option<String>,
    /// `--replace`: take over an existing runner of the same name.
    #[serde(default)]
    pub replace: bool,
    #[serde(default)]
    pub ephemeral: bool,
    /// `--no-default-labels`: no `self-hosted`, `Linux`, `X64`.
    #[serde(default)]
    pub no_default_labels: bool,
}

/// The canonical key of a scope path: `repos/o/r` or `orgs/o`, lowercased.
pub fn scope_key(scope: &str) -> Result<String, SimError> {
    let parts: Vec<&str> = scope.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["repos", owner, repo] if !owner.is_empty() && !repo.is_empty() => {
            Ok(format!("repos/{owner}/{repo}").to_lowercase())
        }
        ["orgs", org] if !org.is_empty() => Ok(format!("orgs/{org}").to_lowercase()),
        _ => Err(SimError::Invalid(format!(
            "scope {scope:?} is neither repos/OWNER/REPO nor orgs/ORG"
        ))),
    }
}

pub(crate) fn random_token(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let body: String = (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{body}")
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// GitHub's default runner labels (`self-hosted`, OS, architecture), any case.
fn is_default_label(label: &str) -> bool {
    const DEFAULTS: [&str; 8] = [
        "self-hosted",
        "linux",
        "windows",
        "macos",
        "x64",
        "arm64",
        "arm",
        "x86",
    ];
    DEFAULTS.iter().any(|d| d.eq_ignore_ascii_case(label))
}

/// Labels GitHub rejects: empty, with a comma (the runner splits on commas),
/// longer than GitHub's 256 characters, or more than 100 of them.
pub fn check_labels(labels: &[String], at_least_one: bool) -> Result<(), SimError> {
    if at_least_one && labels.is_empty() {
        return Err(SimError::Invalid("labels must have at least 1 item".into()));
    }
    if labels.len() > 100 {
        return Err(SimError::Invalid(
            "labels must have at most 100 items".into(),
        ));
    }
    for l in labels {
        if l.trim().is_empty() || l.contains(',') || l.len() > 256 {
            return Err(SimError::Invalid(format!("label {l:?} is not valid")));
        }
    }
    Ok(())
}

impl SimWorld {
    /// The scope, made on first touch: the simulator serves any repository
    /// and organization. Organizations start with the `Default` group (id 1).
    pub fn scope_mut(&mut self, key: &str) -> &mut SimScope {
        self.scopes
            .entry(key.to_string())
            .or_insert_with(|| SimScope {
                runners: BTreeMap::new(),
                groups: vec![SimGroup::new(1, "Default", true)],
            })
    }

    pub fn scope(&self, key: &str) -> Option<&SimScope> {
        self.scopes.get(key)
    }

    fn next_label(&mut self) -> u64 {
        self.next_label_id = self.next_label_id.max(100) + 1;
        self.next_label_id
    }

    pub fn make_labels(&mut self, custom: &[String], defaults: &[&str]) -> Vec<SimLabel> {
        let mut out = Vec::new();
        for d in defaults {
            let id = self.next_label();
            out.push(SimLabel {
                id,
                name: (*d).to_string(),
                kind: "read-only".into(),
            });
        }
        for c in custom {
            if out.iter().any(|l| l.name == *c) {
                continue;
            }
            let id = self.next_label();
            out.push(SimLabel {
                id,
                name: c.clone(),
                kind: "custom".into(),
            });
        }
        out
    }

    pub fn find_runner(&self, id: u64) -> Option<(&str, &SimRunner)> {
        self.scopes
            .iter()
            .find_map(|(k, s)| s.runners.get(&id).map(|r| (k.as_str(), r)))
    }

    pub fn find_runner_mut(&mut self, id: u64) -> Option<&mut SimRunner> {
        self.scopes
            .values_mut()
            .find_map(|s| s.runners.get_mut(&id))
    }

    pub fn group_id(&self, key: &str, name: Option<&str>) -> Result<u64, SimError> {
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(1);
        };
        let groups = self.scope(key).map(|s| s.groups.as_slice()).unwrap_or(&[]);
        groups
            .iter()
            .find(|g| g.name.eq_ignore_ascii_case(name))
            .map(|g| g.id)
            .or_else(|| name.eq_ignore_ascii_case("default").then_some(1))
            .ok_or_else(|| SimError::NotFound(format!("runner group {name:?}")))
    }

    pub fn add_group(&mut self, org: &str, name: &str) -> Result<u64, SimError> {
        let key = scope_key(&format!("orgs/{org}"))?;
        if self
            .scope(&key)
            .is_some_and(|s| s.groups.iter().any(|g| g.name.eq_ignore_ascii_case(name)))
        {
            return Err(SimError::Conflict(format!("runner group {name:?} exists")));
        }
        self.next_group_id = self.next_group_id.max(1) + 1;
        let id = self.next_group_id;
        self.scope_mut(&key)
            .groups
            .push(SimGroup::new(id, name, false));
        Ok(id)
    }

    pub fn prune_tokens(&mut self, now: DateTime<Utc>) {
        self.tokens.retain(|t| t.expires_at > now);
    }

    pub fn issue_token(
        &mut self,
        kind: TokenKind,
        scope: Option<String>,
        now: DateTime<Utc>,
    ) -> IssuedToken {
        self.prune_tokens(now);
        let token = match kind {
            TokenKind::Installation => random_token("ghs_", 36),
            TokenKind::Registration | TokenKind::Remove => random_token("", 29),
        };
        let issued = IssuedToken {
            token,
            kind,
            scope,
            expires_at: now + ChronoDuration::hours(1),
        };
        self.tokens.push(issued.clone());
        issued
    }

    pub fn token_valid(
        &self,
        token: &str,
        kind: TokenKind,
        scope: Option<&str>,
        now: DateTime<Utc>,
    ) -> bool {
        self.tokens.iter().any(|t| {
            t.kind == kind && t.token == token && t.expires_at > now && t.scope.as_deref() == scope
        })
    }

    fn name_taken(&self, key: &str, name: &str) -> Option<u64> {
        self.scope(key)?
            .runners
            .values()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .map(|r| r.id)
    }

    fn insert_runner(&mut self, key: &str, mut runner: SimRunner) -> SimRunner {
        self.next_runner_id = self.next_runner_id.max(1000) + 1;
        runner.id = self.next_runner_id;
        self.scope_mut(key)
            .runners
            .insert(runner.id, runner.clone());
        runner
    }

    /// `generate-jitconfig`: register an offline, ephemeral runner and
    /// return it with its encoded config. The config is base64 of a JSON
    /// document naming the runner (like GitHub's, opaque to hangar); only
    /// its hash is kept.
    pub fn mint_jit(
        &mut self,
        key: &str,
        name: &str,
        group_id: u64,
        labels: &[String],
        work_folder: &str,
        web_url: &str,
    ) -> Result<(SimRunner, String), SimError> {
        if name.trim().is_empty() {
            return Err(SimError::Invalid("name must not be empty".into()));
        }
        check_labels(labels, true)?;
        let scope = self.scope_mut(key);
        if !scope.groups.iter().any(|g| g.id == group_id) {
            return Err(SimError::NotFound(format!("runner group {group_id}")));
        }
        if self.name_taken(key, name).is_some() {
            return Err(SimError::Conflict(format!(
                "A runner with the name {name} already exists."
            )));
        }
        // Exactly the labels requested (GitHub's description of the route:
        // "the names of the custom labels to add to the runner"); names that
        // are GitHub's default labels are its read-only kind.
        let (defaults, custom): (Vec<String>, Vec<String>) =
            labels.iter().cloned().partition(|l| is_default_label(l));
        let defaults: Vec<&str> = defaults.iter().map(String::as_str).collect();
        let labels = self.make_labels(&custom, &defaults);
        let mut runner = self.insert_runner(
            key,
            SimRunner {
                id: 0,
                name: name.to_string(),
                os: "unknown".into(),
                status: "offline".into(),
                busy: false,
                ephemeral: true,
                runner_group_id: group_id,
                labels,
                jit_config_sha256: None,
            },
        );
        let runner_file = serde_json::json!({
            "AgentId": runner.id,
            "AgentName": runner.name,
            "PoolId": group_id,
            "GitHubUrl": web_url,
            "WorkFolder": work_folder,
            "Ephemeral": true,
        });
        let b64 = base64::engine::general_purpose::STANDARD;
        let doc = serde_json::json!({
            ".runner": b64.encode(runner_file.to_string()),
            ".credentials": b64.encode(random_token("sim-credential-", 32)),
        });
        let encoded = b64.encode(doc.to_string());
        let hash = sha256_hex(encoded.as_bytes());
        runner.jit_config_sha256 = Some(hash.clone());
        if let Some(r) = self.find_runner_mut(runner.id) {
            r.jit_config_sha256 = Some(hash);
        }
        Ok((runner, encoded))
    }

    /// The guest's `run.sh --jitconfig`: the runner named in the config goes
    /// online, if the config is one we minted and its runner still exists.
    pub fn run_jit(&mut self, encoded: &str) -> Result<SimRunner, SimError> {
        let hash = sha256_hex(encoded.trim().as_bytes());
        let runner = self
            .scopes
            .values_mut()
            .flat_map(|s| s.runners.values_mut())
            .find(|r| r.jit_config_sha256.as_deref() == Some(hash.as_str()))
            .ok_or_else(|| SimError::Unauthorized("jit config not recognised".into()))?;
        runner.status = "online".into();
        runner.os = "Linux".into();
        Ok(runner.clone())
    }

    /// A persistent (or `--ephemeral`) `config.sh` registration.
    pub fn register(
        &mut self,
        req: &RegisterRunner,
        now: DateTime<Utc>,
    ) -> Result<SimRunner, SimError> {
        let key = scope_key(&req.scope)?;
        if !self.token_valid(&req.token, TokenKind::Registration, Some(&key), now) {
            return Err(SimError::Unauthorized(
                "registration token is not valid for this scope".into(),
            ));
        }
        if req.name.trim().is_empty() {
            return Err(SimError::Invalid("name must not be empty".into()));
        }
        check_labels(&req.labels, false)?;
        let group_id = self.group_id(&key, req.group.as_deref())?;
        if let Some(old) = self.name_taken(&key, &req.name) {
            if !req.replace {
                return Err(SimError::Conflict(format!(
                    "a runner named {:?} exists (use replace)",
                    req.name
                )));
            }
            self.scope_mut(&key).runners.remove(&old);
        }
        let defaults: &[&str] = if req.no_default_labels {
            &[]
        } else {
            &["self-hosted", "Linux", "X64"]
        };
        let labels = self.make_labels(&req.labels, defaults);
        Ok(self.insert_runner(
            &key,
            SimRunner {
                id: 0,
                name: req.name.clone(),
                os: "Linux".into(),
                status: "offline".into(),
                busy: false,
                ephemeral: req.ephemeral,
                runner_group_id: group_id,
                labels,
                jit_config_sha256: None,
            },
        ))
    }

    /// Many idle, online runners at once (`PREFIX-0`, `PREFIX-1`, ...).
    pub fn add_runners(
        &mut self,
        scope: &str,
        prefix: &str,
        count: u32,
        labels: &[String],
    ) -> Result<Vec<u64>, SimError> {
        let key = scope_key(scope)?;
        check_labels(labels, false)?;
        let mut ids = Vec::new();
        for i in 0..count {
            let name = format!("{prefix}-{i}");
            if self.name_taken(&key, &name).is_some() {
                return Err(SimError::Conflict(format!(
                    "a runner named {name:?} exists"
                )));
            }
            let labels = self.make_labels(labels, &["self-hosted", "Linux", "X64"]);
            let r = self.insert_runner(
                &key,
                SimRunner {
                    id: 0,
                    name,
                    os: "Linux".into(),
                    status: "online".into(),
                    busy: false,
                    ephemeral: false,
                    runner_group_id: 1,
                    labels,
                    jit_config_sha256: None,
                },
            );
            ids.push(r.id);
        }
        Ok(ids)
    }

    pub fn set_online(&mut self, id: u64, online: bool) -> Result<SimRunner, SimError> {
        let r = self
            .find_runner_mut(id)
            .ok_or_else(|| SimError::NotFound(format!("runner {id}")))?;
        r.status = if online { "online" } else { "offline" }.into();
        let lost_job = !online && r.busy;
        if !online {
            r.busy = false;
        }
        let r = r.clone();
        if lost_job {
            // GitHub fails a job whose runner stops answering.
            self.end_job_of_runner(id, "failure", Utc::now());
        }
        Ok(r)
    }

    pub fn start_job(&mut self, id: u64) -> Result<SimRunner, SimError> {
        let r = self
            .find_runner_mut(id)
            .ok_or_else(|| SimError::NotFound(format!("runner {id}")))?;
        if r.status != "online" {
            return Err(SimError::Invalid(format!("runner {id} is offline")));
        }
        if r.busy {
            return Err(SimError::Conflict(format!("runner {id} is already busy")));
        }
        r.busy = true;
        Ok(r.clone())
    }

    /// The job ends (the workflow job it ran, if any, succeeds); an
    /// ephemeral runner then unregisters itself, as GitHub's do. Returns
    /// the runner as it is left (`None`: removed).
    pub fn finish_job(&mut self, id: u64) -> Result<Option<SimRunner>, SimError> {
        if !self.find_runner(id).is_some_and(|(_, r)| r.busy) {
            return self.release_runner(id);
        }
        self.end_job_of_runner(id, "success", Utc::now());
        self.release_runner(id)
    }

    /// A busy runner becomes idle, or is removed when ephemeral.
    pub(crate) fn release_runner(&mut self, id: u64) -> Result<Option<SimRunner>, SimError> {
        let (key, r) = self
            .find_runner(id)
            .map(|(k, r)| (k.to_string(), r.clone()))
            .ok_or_else(|| SimError::NotFound(format!("runner {id}")))?;
        if !r.busy {
            return Err(SimError::Invalid(format!("runner {id} is not busy")));
        }
        if r.ephemeral {
            self.scope_mut(&key).runners.remove(&id);
            return Ok(None);
        }
        let r = self.find_runner_mut(id).expect("found above");
        r.busy = false;
        Ok(Some(r.clone()))
    }

    /// `DELETE .../runners/{id}` in `key`.
    pub fn delete_runner(&mut self, key: &str, id: u64) -> Result<(), SimError> {
        let scope = self
            .scopes
            .get_mut(key)
            .ok_or_else(|| SimError::NotFound(format!("runner {id}")))?;
        match scope.runners.get(&id) {
            None => Err(SimError::NotFound(format!("runner {id}"))),
            Some(r) if r.busy => Err(SimError::Invalid(format!(
                "Bad request - Runner \"{}\" is still running a job\"",
                r.name
            ))),
            Some(_) => {
                scope.runners.remove(&id);
                Ok(())
            }
        }
    }
}
