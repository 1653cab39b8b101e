//! Validation of a parsed fleet file, apart from parsing: every rule runs and
//! every problem is reported, each at the node it is about.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{Locator, Problem};
use super::node::{FieldPath, Node, Value};
use super::types::{Fleet, GitHub, Host, NetworkMode, Pool, RUNNER_LATEST, SANDBOX_URI};
use super::units::{ByteSize, MemorySpec, Percent};
use crate::model::names::{ownership_label, slot_name};

/// GitHub refuses runner names longer than this; ours are also VM names and
/// guest host names, which DNS limits to 63.
pub const MAX_RUNNER_NAME: usize = 63;
/// Longest runner label accepted.
pub const MAX_LABEL: usize = 256;
/// Labels GitHub gives every self-hosted runner; a pool need not (and must
/// not) repeat them.
pub const RESERVED_LABELS: [&str; 8] = [
    "self-hosted",
    "linux",
    "x64",
    "arm64",
    "arm",
    "windows",
    "macos",
    "osx",
];

const MIN_VM_MEMORY: u64 = 256 << 20;
const MIN_DISK: u64 = 1 << 30;

/// Literal secrets in the file, found in the tree before anything else reads
/// it, so that no later error message can echo one.
pub(crate) fn find_secrets(root: &Node, loc: &Locator<'_>) -> Vec<Problem> {
    let auth = FieldPath::root().key("spec").key("github").key("auth");
    let mut problems = Vec::new();
    root.walk(|path, node, _| {
        let Value::Str(s) = &node.value else { return };
        let in_auth = path.segments().starts_with(auth.segments());
        if looks_like_secret(s, in_auth) {
            problems.push(loc.at(
                node.pos,
                node.len,
                path,
                "this looks like a literal token or private key; secrets never go in the fleet file: \
                 put the token in an environment variable (`auth.tokenEnv`) or a file (`auth.tokenFile`)",
            ));
        } else if let Some(why) = super::trust::url_has_credentials(s) {
            problems.push(loc.at(node.pos, node.len, path, why));
        }
    });
    problems
}

/// GitHub's token prefixes, PEM blocks, and (in auth fields, where only
/// names and paths belong) long hex or base64 blobs.
pub fn looks_like_secret(value: &str, in_auth_field: bool) -> bool {
    const PREFIXES: [&str; 6] = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"];
    let v = value.trim();
    if PREFIXES.iter().any(|p| {
        v.split(|c: char| c.is_whitespace() || c == '=' || c == ':' || c == '"' || c == '\'')
            .any(|word| word.starts_with(p) && word.len() >= p.len() + 16)
    }) {
        return true;
    }
    if v.contains("-----BEGIN") || v.contains("PRIVATE KEY-----") {
        return true;
    }
    if !in_auth_field {
        return false;
    }
    let hex = v.len() >= 32 && v.bytes().all(|b| b.is_ascii_hexdigit());
    let base64ish = v.len() >= 40
        && !v.starts_with(['/', '.', '~'])
        && !v.contains('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-'))
        && v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes().any(|b| b.is_ascii_alphabetic());
    hex || base64ish
}

/// Every problem with `fleet`, in document order.
pub(crate) fn validate(fleet: &Fleet, loc: &Locator<'_>) -> Vec<Problem> {
    let mut v = Validator {
        loc,
        problems: Vec::new(),
    };
    let root = FieldPath::root();
    let name_path = root.key("metadata").key("name");
    v.dns_label(&name_path, &fleet.metadata.name, "fleet name");
    let spec = root.key("spec");
    v.github(&spec.key("github"), &fleet.spec.github);
    if let Some(w) = &fleet.spec.github.webhook {
        v.webhook(&spec.key("github").key("webhook"), w);
    }

    let hosts = spec.key("hosts");
    if fleet.spec.hosts.is_empty() {
        v.at_path(&hosts, "a fleet needs at least one host");
    }
    let mut host_names = BTreeMap::new();
    for (i, host) in fleet.spec.hosts.iter().enumerate() {
        let p = hosts.index(i);
        if let Some(first) = host_names.insert(host.name.as_str(), i) {
            v.at_path(
                &p.key("name"),
                format!(
                    "host name `{}` is already used by spec.hosts[{first}]",
                    host.name
                ),
            );
        }
        v.host(&p, host);
    }

    let pools = spec.key("pools");
    let mut pool_names = BTreeMap::new();
    for (i, pool) in fleet.spec.pools.iter().enumerate() {
        let p = pools.index(i);
        if let Some(first) = pool_names.insert(pool.name.as_str(), i) {
            v.at_path(
                &p.key("name"),
                format!(
                    "pool name `{}` is already used by spec.pools[{first}]",
                    pool.name
                ),
            );
        }
        v.pool(&p, pool, &fleet.metadata.name, &host_names);
        v.fits_somewhere(&p, pool, fleet);
    }
    v.scale_scope(&spec, fleet);
    v.policy(&spec.key("policy"), fleet);
    if let Some(m) = &fleet.spec.metrics {
        v.metrics(&spec.key("metrics"), m);
    }
    v.pinned_memory(&spec, fleet);
    v.problems
}

struct Validator<'a, 'l> {
    loc: &'a Locator<'l>,
    problems: Vec<Problem>,
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Validator<'_, '_> {
    fn at_path(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.problems.push(self.loc.at_path(path, message));
    }

    fn at_key(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.problems.push(self.loc.at_key(path, message));
    }

    fn dns_label(&mut self, path: &FieldPath, value: &str, what: &str) {
        if !is_dns_label(value) {
            self.at_path(
                path,
                format!(
                    "{what} `{value}` is not a DNS label: 1 to 63 lowercase letters, digits or `-`, \
                     not starting or ending with `-`"
                ),
            );
        }
    }

    fn non_empty(&mut self, path: &FieldPath, value: &str) -> bool {
        if value.trim().is_empty() {
            self.at_path(path, "must not be empty");
            false
        } else {
            true
        }
    }

    fn github(&mut self, p: &FieldPath, gh: &GitHub) {
        match (&gh.repository, &gh.organization) {
            (Some(_), Some(_)) => self.at_key(
                &p.key("organization"),
                "set either `repository` or `organization`, not both",
            ),
            (None, None) if !gh.simulator => {
                self.at_path(p, "missing `repository: OWNER/REPO` or `organization: ORG`")
            }
            _ => {}
        }
        if let Some(repo) = &gh.repository {
            let ok = repo.split_once('/').is_some_and(|(owner, name)| {
                is_github_owner(owner)
                    && !name.is_empty()
                    && name.len() <= 100
                    && name != "."
                    && name != ".."
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
            if !ok {
                self.at_path(
                    &p.key("repository"),
                    format!("`{repo}` is not a repository: expected OWNER/REPO"),
                );
            }
        }
        if let Some(org) = &gh.organization {
            if !is_github_owner(org) {
                self.at_path(
                    &p.key("organization"),
                    format!("`{org}` is not an organization name"),
                );
            }
        }
        if let Some(api) = &gh.api_url {
            match url::Url::parse(api) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u)
                    if u.scheme() == "http"
                        && matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]")) => {}
                _ => self.at_path(
                    &p.key("apiUrl"),
                    format!(
                        "`{api}` is not an https:// URL (plain http is accepted only on loopback)"
                    ),
                ),
            }
        }
        let auth_path = p.key("auth");
        match &gh.auth {
            None if !gh.simulator => self.at_path(
                p,
                "missing `auth`: one of `tokenEnv`, `tokenFile` or `app` (or `simulator: true`)",
            ),
            None => {}
            Some(auth) => {
                let set = [
                    auth.token_env.is_some(),
                    auth.token_file.is_some(),
                    auth.app.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if set != 1 {
                    self.at_path(
                        &auth_path,
                        "set exactly one of `tokenEnv`, `tokenFile` or `app`",
                    );
                }
                if let Some(env) = &auth.token_env {
                    self.env_name(&auth_path.key("tokenEnv"), env);
                }
                if let Some(file) = &auth.token_file {
                    self.non_empty(&auth_path.key("tokenFile"), file);
                }
                if let Some(app) = &auth.app {
                    let app_path = auth_path.key("app");
                    self.non_empty(&app_path.key("privateKeyFile"), &app.private_key_file);
                    if app.app_id == 0 {
                        self.at_path(&app_path.key("appId"), "must be a positive number");
                    }
                    if app.installation_id == 0 {
                        self.at_path(&app_path.key("installationId"), "must be a positive number");
                    }
                }
            }
        }
    }

    /// Scaled pools follow the jobs of repositories: the fleet's repository,
    /// or for an organization the `repositories` listed.
    fn scale_scope(&mut self, spec: &FieldPath, fleet: &Fleet) {
        let gh = &fleet.spec.github;
        let gp = spec.key("github");
        if gh.repository.is_some() && !gh.repositories.is_empty() {
            self.at_key(
                &gp.key("repositories"),
                "only for an `organization`: a repository fleet follows its own repository's jobs",
            );
        }
        for (i, r) in gh.repositories.iter().enumerate() {
            let name = r.rsplit_once('/').map_or(r.as_str(), |(_, n)| n);
            let owner_ok = r.split_once('/').is_none_or(|(o, _)| {
                gh.organization
                    .as_deref()
                    .is_none_or(|org| o.eq_ignore_ascii_case(org))
            });
            if name.is_empty() || r.matches('/').count() > 1 || !owner_ok {
                self.at_path(
                    &gp.key("repositories").index(i),
                    format!(
                        "`{r}` is not a repository of the organization: expected REPO or ORG/REPO"
                    ),
                );
            }
        }
        let scaled = fleet.spec.pools.iter().position(|p| p.scale.is_some());
        if let (Some(i), Some(_), true) = (scaled, &gh.organization, gh.repositories.is_empty()) {
            self.at_key(
                &spec.key("pools").index(i).key("scale"),
                "a scaled pool of an organization fleet needs `spec.github.repositories`: \
                 the repositories whose queued jobs it follows (GitHub lists jobs per repository)",
            );
        }
    }

    fn host(&mut self, p: &FieldPath, host: &Host) {
        self.dns_label(&p.key("name"), &host.name, "host name");
        let uri = host.uri.trim();
        if uri != SANDBOX_URI && !uri.contains(":/") {
            self.at_path(
                &p.key("uri"),
                format!(
                    "`{}` is not a libvirt URI (like qemu:///system or qemu+ssh://user@node/system) nor `sandbox`",
                    host.uri
                ),
            );
        }
        if !host.allow_unsafe_uri {
            if let Some(why) = super::trust::uri_runs_a_program(uri) {
                self.at_path(
                    &p.key("uri"),
                    format!("{why}: refused unless the host sets `allowUnsafeUri: true`"),
                );
            }
        }
        for (i, dir) in host.image_dirs.iter().enumerate() {
            if let Some(why) = super::trust::host_path(dir) {
                self.at_path(&p.key("imageDirs").index(i), why);
            }
        }
        if let Some(dir) = &host.console_dir {
            if let Some(why) = super::trust::host_path(dir) {
                self.at_path(&p.key("consoleDir"), why);
            }
        }
        self.non_empty(&p.key("storagePool"), &host.storage_pool);
        let net = &host.network;
        let np = p.key("network");
        match net.mode {
            NetworkMode::None | NetworkMode::User => {
                if net.name.is_some() {
                    self.at_key(
                        &np.key("name"),
                        "`name` applies only to modes `network` and `isolated`",
                    );
                }
                if net.filter.is_some() {
                    self.at_key(
                        &np.key("filter"),
                        "`filter` applies only to modes `network` and `isolated`",
                    );
                }
            }
            NetworkMode::Network | NetworkMode::Isolated => {
                if let Some(name) = &net.name {
                    self.non_empty(&np.key("name"), name);
                }
                if let Some(filter) = &net.filter {
                    self.non_empty(&np.key("filter"), filter);
                }
            }
        }
        match (&net.subnet, net.mode) {
            (Some(_), NetworkMode::None | NetworkMode::User | NetworkMode::Network) => self.at_key(
                &np.key("subnet"),
                "`subnet` applies only to mode `isolated`",
            ),
            (Some(subnet), NetworkMode::Isolated) => {
                if let Err(e) = crate::model::network::Subnet::parse(subnet) {
                    self.at_path(&np.key("subnet"), e);
                }
            }
            (None, _) => {}
        }
        if let Some(max) = host.max_memory {
            self.memory(&p.key("maxMemory"), max, 1);
        }
        if !(host.cpu_overcommit.is_finite() && (0.1..=64.0).contains(&host.cpu_overcommit)) {
            self.at_path(
                &p.key("cpuOvercommit"),
                format!("{} is out of range: from 0.1 to 64", host.cpu_overcommit),
            );
        }
    }

    /// The pools that can only land on one host (pinned to it, or the
    /// fleet's only host) with memory given as a share: their VMs' shares
    /// together must fit in 100% of that host. Known without contacting it.
    fn pinned_memory(&mut self, spec: &FieldPath, fleet: &Fleet) {
        for host in &fleet.spec.hosts {
            let mut pinned = Vec::new();
            let mut total: u64 = 0;
            for (i, pool) in fleet.spec.pools.iter().enumerate() {
                let only_here = match &pool.hosts {
                    Some(h) => h.len() == 1 && h[0] == host.name,
                    None => fleet.spec.hosts.len() == 1,
                };
                // A scaled pool must fit only its `min`: its other runners
                // are placed when there is room.
                if let (true, MemorySpec::Percent(pct)) = (only_here, pool.vm.memory) {
                    total += u64::from(pct.hundredths()) * u64::from(pool.min_slots());
                    pinned.push((i, pool, pct));
                }
            }
            pinned.retain(|(_, p, _)| p.min_slots() > 0);
            if total <= 100 * 100 || pinned.is_empty() {
                continue;
            }
            let parts: Vec<String> = pinned
                .iter()
                .map(|(_, p, pct)| format!("{} ({} x {pct})", p.name, p.min_slots()))
                .collect();
            let (first, _, _) = pinned[0];
            self.at_path(
                &spec.key("pools").index(first).key("vm").key("memory"),
                format!(
                    "pools that can only run on host `{}` ask for {} of its memory: {}; \
                     at most 100% fits",
                    host.name,
                    Percent::from_hundredths(total.min(u64::from(u32::MAX)) as u32),
                    parts.join(", ")
                ),
            );
        }
    }

    /// Exactly one of `count` and `scale`; `min <= max`, `max` at least 1.
    fn size(&mut self, p: &FieldPath, pool: &Pool) {
        // `count` defaults to 0 in the type: whether the file gives it is
        // read from the file itself.
        let count = self.loc.index.key_pos(&p.key("count")).is_some();
        match (count, &pool.scale) {
            (true, Some(_)) => {
                self.at_key(&p.key("scale"), "set either `count` or `scale`, not both")
            }
            (false, None) => self.at_path(p, "missing `count: N` or `scale: {min, max, idle}`"),
            (true, None) => {}
            (false, Some(scale)) => {
                let sp = p.key("scale");
                if scale.max == 0 {
                    self.at_path(&sp.key("max"), "must be at least 1");
                } else if scale.min > scale.max {
                    self.at_path(
                        &sp.key("min"),
                        format!("{} is more than `max` ({})", scale.min, scale.max),
                    );
                }
                if scale.cooldown.is_some_and(|c| c.std().is_zero()) {
                    self.at_path(&sp.key("cooldown"), "must be longer than 0s");
                }
            }
        }
    }

    /// A runner of `pool` that can never fit: its memory is a size larger
    /// than every allowed host's `maxMemory` size.
    fn fits_somewhere(&mut self, p: &FieldPath, pool: &Pool, fleet: &Fleet) {
        let MemorySpec::Size(size) = pool.vm.memory else {
            return;
        };
        let allowed: Vec<&Host> = fleet
            .spec
            .hosts
            .iter()
            .filter(|h| pool.hosts.as_ref().is_none_or(|l| l.contains(&h.name)))
            .collect();
        let never = !allowed.is_empty()
            && allowed.iter().all(|h| match h.max_memory {
                Some(MemorySpec::Size(max)) => size.bytes() > max.bytes(),
                _ => false,
            });
        if never {
            self.at_path(
                &p.key("vm").key("memory"),
                format!(
                    "one runner's {size} fits on none of the pool's hosts (each allows less in `maxMemory`)"
                ),
            );
        }
    }

    fn memory(&mut self, path: &FieldPath, m: MemorySpec, min: u64) {
        match m {
            MemorySpec::Percent(pct) if !pct.is_fraction() => self.at_path(
                path,
                format!("{pct} is out of range: more than 0% and at most 100%"),
            ),
            MemorySpec::Size(size) if size.bytes() < min => self.at_path(
                path,
                format!("{size} is too small: at least {}", ByteSize(min)),
            ),
            _ => {}
        }
    }

    fn pool(&mut self, p: &FieldPath, pool: &Pool, fleet: &str, hosts: &BTreeMap<&str, usize>) {
        self.dns_label(&p.key("name"), &pool.name, "pool name");
        self.size(p, pool);
        if pool.max_slots() > 0 {
            let last = slot_name(fleet, &pool.name, pool.max_slots() - 1);
            if last.len() > MAX_RUNNER_NAME {
                self.at_path(
                    &p.key("name"),
                    format!(
                        "runner name `{last}` is {} characters, over the limit of {MAX_RUNNER_NAME}: \
                         shorten the fleet or pool name",
                        last.len()
                    ),
                );
            }
        }
        if let Some(pool_hosts) = &pool.hosts {
            let hp = p.key("hosts");
            if pool_hosts.is_empty() {
                self.at_path(
                    &hp,
                    "an empty host list places nothing; omit `hosts` for all hosts",
                );
            }
            let mut seen = BTreeSet::new();
            for (i, h) in pool_hosts.iter().enumerate() {
                if !hosts.contains_key(h.as_str()) {
                    self.at_path(&hp.index(i), format!("no host named `{h}` in spec.hosts"));
                } else if !seen.insert(h.as_str()) {
                    self.at_path(&hp.index(i), format!("host `{h}` is listed twice"));
                }
            }
        }
        self.labels(&p.key("labels"), &pool.labels, fleet);
        self.non_empty(&p.key("runnerGroup"), &pool.runner_group);

        let vp = p.key("vm");
        let vm = &pool.vm;
        if vm.cpus == 0 {
            self.at_path(&vp.key("cpus"), "a VM needs at least 1 cpu");
        }
        self.memory(&vp.key("memory"), vm.memory, MIN_VM_MEMORY);
        if vm.disk.bytes() < MIN_DISK {
            self.at_path(
                &vp.key("disk"),
                format!("{} is too small: at least {}", vm.disk, ByteSize(MIN_DISK)),
            );
        }
        if self.non_empty(&vp.key("image"), &vm.image) {
            if vm.image.starts_with('/') {
                if let Some(why) = super::trust::host_path(&vm.image) {
                    self.at_path(&vp.key("image"), why);
                }
            }
            if vm.image.starts_with("http://") {
                self.at_path(
                    &vp.key("image"),
                    "plain http is refused; use an https:// URL",
                );
            } else if vm.image.starts_with("https://") && vm.image_sha256.is_none() {
                self.at_path(
                    &vp.key("image"),
                    "an https:// image needs `imageSha256` (64 hex digits) so the download can be checked",
                );
            }
        }
        if let Some(sha) = &vm.image_sha256 {
            if !is_hex64(sha) {
                self.at_path(
                    &vp.key("imageSha256"),
                    "not a SHA-256: expected 64 hex digits",
                );
            }
        }
        if let Some(boot) = &vm.boot {
            let bp = vp.key("boot");
            if !boot.kernel.starts_with('/') {
                self.at_path(&bp.key("kernel"), "must be an absolute path on the host");
            }
            if boot.initrd.as_deref().is_some_and(|i| !i.starts_with('/')) {
                self.at_path(&bp.key("initrd"), "must be an absolute path on the host");
            }
        }
        let mut archs = BTreeSet::new();
        for (i, a) in vm.emulate.iter().enumerate() {
            if !archs.insert(*a) {
                self.at_path(&vp.key("emulate").index(i), "listed twice");
            }
        }
        for (i, key) in vm.ssh_authorized_keys.iter().enumerate() {
            let k = key.trim();
            let known = ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"];
            if !known.iter().any(|p| k.starts_with(p)) || k.split_whitespace().count() < 2 {
                self.at_path(
                    &vp.key("sshAuthorizedKeys").index(i),
                    "not an SSH public key (`ssh-ed25519 AAAA... comment`)",
                );
            }
        }

        if let Some(cache) = &pool.cache {
            let cp = p.key("cache");
            if cache.size.bytes() < MIN_DISK {
                self.at_path(
                    &cp.key("size"),
                    format!(
                        "{} is too small: at least {}",
                        cache.size,
                        ByteSize(MIN_DISK)
                    ),
                );
            }
            if !cache.prune_above.is_fraction() {
                self.at_path(
                    &cp.key("pruneAbove"),
                    format!(
                        "{} is out of range: more than 0% and at most 100%",
                        cache.prune_above
                    ),
                );
            }
            if !cache.mount_path.starts_with('/')
                || cache.mount_path.trim_end_matches('/').is_empty()
            {
                self.at_path(
                    &cp.key("mountPath"),
                    "must be an absolute path other than `/`",
                );
            } else if let Some(why) = super::trust::guest_path(&cache.mount_path) {
                self.at_path(&cp.key("mountPath"), why);
            }
        }

        if !pool.default_labels && !pool.ephemeral {
            self.at_key(
                &p.key("defaultLabels"),
                "`defaultLabels: false` needs `ephemeral: true`: config.sh gives a persistent runner \
                 GitHub's default labels",
            );
        }
        let rp = p.key("runner");
        let r = &pool.runner;
        match (&r.version, &r.sha256, &r.preinstalled) {
            (_, _, Some(_)) if r.version.is_some() || r.sha256.is_some() => self.at_path(
                &rp,
                "set either `preinstalled` or `version` (with `sha256`), not both",
            ),
            (None, Some(_), None) => self.at_key(&rp.key("sha256"), "`sha256` needs `version`"),
            (Some(v), Some(_), None) if v == RUNNER_LATEST => self.at_key(
                &rp.key("sha256"),
                "`sha256` needs a pinned `version`: `latest` takes GitHub's digest",
            ),
            _ => {}
        }
        if let Some(v) = r.version.as_deref().filter(|v| *v != RUNNER_LATEST) {
            match crate::model::runner::RunnerVersion::parse(v) {
                None => self.at_path(
                    &rp.key("version"),
                    format!("`{v}` is neither `latest` nor a release like 2.330.0"),
                ),
                Some(parsed) if parsed < crate::model::runner::MINIMUM_RUNNER => self.at_path(
                    &rp.key("version"),
                    format!(
                        "runner {v} is below {}, the oldest GitHub lets register",
                        crate::model::runner::MINIMUM_RUNNER
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(sha) = &r.sha256 {
            if !is_hex64(sha) {
                self.at_path(&rp.key("sha256"), "not a SHA-256: expected 64 hex digits");
            }
        }
        if let Some(dir) = &r.preinstalled {
            if !dir.starts_with('/') {
                self.at_path(
                    &rp.key("preinstalled"),
                    "must be an absolute path in the image",
                );
            } else if let Some(why) = super::trust::guest_path(dir) {
                self.at_path(&rp.key("preinstalled"), why);
            }
        }
        let wf = &r.work_folder;
        if wf.is_empty() || wf.starts_with('/') || wf.split('/').any(|c| c == "..") {
            self.at_path(
                &rp.key("workFolder"),
                "must be a relative path inside the runner's directory",
            );
        } else if let Some(why) = super::trust::guest_path(&format!("/{wf}")) {
            self.at_path(&rp.key("workFolder"), why);
        }

        let un = &pool.user.name;
        let valid_user = un.len() <= 32
            && un
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && un
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid_user {
            self.at_path(
                &p.key("user").key("name"),
                format!(
                    "`{un}` is not a user name: up to 32 lowercase letters, digits, `_` or `-`"
                ),
            );
        } else if un == "root" {
            self.at_path(
                &p.key("user").key("name"),
                "the runner must not run as root",
            );
        }
    }

    fn labels(&mut self, p: &FieldPath, labels: &[String], fleet: &str) {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let ours = ownership_label(fleet);
        for (i, label) in labels.iter().enumerate() {
            let lp = p.index(i);
            let lower = label.to_lowercase();
            if label.trim().is_empty() {
                self.at_path(&lp, "a label must not be empty");
            } else if label.contains(',') {
                self.at_path(&lp, format!("label `{label}` contains a comma"));
            } else if label.chars().any(char::is_whitespace) {
                self.at_path(&lp, format!("label `{label}` contains whitespace"));
            } else if label
                .chars()
                .any(|c| c.is_control() || "'\"`$\\;&|<>".contains(c))
            {
                self.at_path(
                    &lp,
                    format!("label `{label}` contains a quote, `$`, `\\` or a shell or control character"),
                );
            } else if label.chars().count() > MAX_LABEL {
                self.at_path(&lp, format!("label is longer than {MAX_LABEL} characters"));
            } else if RESERVED_LABELS.contains(&lower.as_str()) {
                self.at_path(
                    &lp,
                    format!("`{label}` is a default label every self-hosted runner already has"),
                );
            } else if lower.starts_with("hangar-") {
                self.at_path(
                    &lp,
                    format!(
                        "labels starting with `hangar-` are reserved (runners carry `{ours}` to mark them as this fleet's)"
                    ),
                );
            }
            if let Some(first) = seen.insert(lower, i) {
                self.at_path(
                    &lp,
                    format!("label `{label}` repeats labels[{first}] (labels ignore case)"),
                );
            }
        }
    }

    fn webhook(&mut self, p: &FieldPath, w: &crate::fleet::WebhookSpec) {
        match w.listen.parse::<std::net::SocketAddr>() {
            Err(_) => self.at_path(
                &p.key("listen"),
                format!("`{}` is not ADDRESS:PORT (e.g. 127.0.0.1:9465)", w.listen),
            ),
            Ok(a) if !a.ip().is_loopback() && !w.allow_non_loopback => self.at_path(
                &p.key("listen"),
                format!(
                    "`{}` is not a loopback address; set allowNonLoopback: true to mean it",
                    w.listen
                ),
            ),
            Ok(_) => {}
        }
        match (&w.secret_env, &w.secret_file) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => self.at_path(p, "set exactly one of `secretEnv` or `secretFile`"),
        }
        if let Some(env) = &w.secret_env {
            self.env_name(&p.key("secretEnv"), env);
        }
        if let Some(file) = &w.secret_file {
            self.non_empty(&p.key("secretFile"), file);
        }
    }

    /// `env` at `p` names an environment variable (`tokenEnv`, `secretEnv`).
    fn env_name(&mut self, p: &FieldPath, env: &str) {
        let valid = env
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            self.at_path(
                p,
                "not an environment variable name (letters, digits and `_`, not starting with a digit)",
            );
        }
    }

    fn metrics(&mut self, p: &FieldPath, m: &crate::fleet::MetricsSpec) {
        let Some(listen) = &m.listen else { return };
        match listen.parse::<std::net::SocketAddr>() {
            Err(_) => self.at_path(
                &p.key("listen"),
                format!("`{listen}` is not ADDRESS:PORT (e.g. 127.0.0.1:9464, [::1]:9464)"),
            ),
            Ok(a) if !a.ip().is_loopback() && !m.allow_non_loopback => self.at_path(
                &p.key("listen"),
                format!(
                    "`{listen}` is not a loopback address: the metrics would be open to the \
                     network; set allowNonLoopback: true to mean it (and firewall it)"
                ),
            ),
            Ok(_) => {}
        }
    }

    fn policy(&mut self, p: &FieldPath, fleet: &Fleet) {
        let pol = &fleet.spec.policy;
        for (key, value) in [
            ("bootTimeout", pol.boot_timeout),
            ("offlineTimeout", pol.offline_timeout),
            ("backoffBase", pol.backoff_base),
            ("backoffMax", pol.backoff_max),
        ] {
            if value.is_some_and(|d| d.std().is_zero()) {
                self.at_path(&p.key(key), "must be longer than 0s");
            }
        }
        let resolved = pol.resolved();
        if resolved.backoff_base > resolved.backoff_max {
            self.at_path(
                &p.key(if pol.backoff_base.is_some() {
                    "backoffBase"
                } else {
                    "backoffMax"
                }),
                "`backoffBase` must not exceed `backoffMax`",
            );
        }
        let cp = p.key("concurrency");
        if pol.concurrency.global == Some(0) {
            self.at_path(&cp.key("global"), "must be at least 1");
        }
        if pol.concurrency.per_host == Some(0) {
            self.at_path(&cp.key("perHost"), "must be at least 1");
        }
    }
}

fn is_github_owner(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 39
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fleet with `github` lines and one pool whose size lines are `size`
    /// (indented for the pool entry); the problems as (line, path, message).
    fn problems(github: &str, size: &str) -> Vec<(u32, String, String)> {
        problems_with(github, size, "4GiB")
    }

    fn problems_with(github: &str, size: &str, max_memory: &str) -> Vec<(u32, String, String)> {
        let text = format!(
            "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: f\nspec:\n  github:\n{github}    \
             simulator: true\n  hosts:\n    - name: h\n      uri: sandbox\n      maxMemory: {max_memory}\n  \
             pools:\n    - name: p\n{size}      vm: {{cpus: 1, memory: 1GiB, disk: 4GiB, image: /i}}\n"
        );
        match crate::fleet::load_str("f.yaml", &text) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems()
                .iter()
                .map(|p| (p.line, p.path.clone(), p.message.clone()))
                .collect(),
        }
    }

    #[test]
    fn a_pool_has_exactly_one_of_count_and_scale() {
        assert!(problems("", "      count: 2\n").is_empty());
        assert!(problems("", "      scale: {max: 3}\n").is_empty());
        let both = problems("", "      count: 2\n      scale: {max: 3}\n");
        assert_eq!(both.len(), 1, "{both:?}");
        assert_eq!((both[0].0, both[0].1.as_str()), (15, "spec.pools[0].scale"));
        assert!(both[0].2.contains("not both"), "{both:?}");
        let neither = problems("", "");
        assert_eq!(neither[0].1, "spec.pools[0]", "{neither:?}");
        assert!(
            neither[0].2.contains("missing `count: N` or `scale"),
            "{neither:?}"
        );
    }

    #[test]
    fn scale_bounds_are_checked_where_they_are_written() {
        let p = problems("", "      scale: {min: 4, max: 3}\n");
        assert_eq!(p[0].1, "spec.pools[0].scale.min", "{p:?}");
        assert!(p[0].2.contains("4 is more than `max` (3)"), "{p:?}");
        let p = problems("", "      scale: {max: 0}\n");
        assert_eq!(p[0].1, "spec.pools[0].scale.max", "{p:?}");
        let p = problems("", "      scale: {max: 2, cooldown: 0s}\n");
        assert_eq!(p[0].1, "spec.pools[0].scale.cooldown", "{p:?}");
        // A max beyond the host is fine: placement decides at create time.
        assert!(problems("", "      scale: {max: 100}\n").is_empty());
    }

    #[test]
    fn a_webhook_names_one_secret_and_listens_on_loopback() {
        let ok = "    webhook: {listen: '127.0.0.1:9465', secretEnv: HOOK_SECRET}\n";
        assert!(problems(ok, "      count: 1\n").is_empty());
        let p = problems(
            "    webhook: {listen: '0.0.0.0:9465', secretEnv: A, secretFile: /s}\n",
            "      count: 1\n",
        );
        let paths: Vec<&str> = p.iter().map(|(_, path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.github.webhook.listen", "spec.github.webhook"],
            "{p:?}"
        );
    }

    #[test]
    fn a_runner_that_fits_no_host_is_refused_even_when_scaled() {
        assert!(problems_with("", "      scale: {max: 2}\n", "1GiB").is_empty());
        let p = problems_with("", "      scale: {max: 2}\n", "512MiB");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].1, "spec.pools[0].vm.memory", "{p:?}");
        assert!(p[0].2.contains("fits on none of the pool's hosts"), "{p:?}");
    }

    #[test]
    fn an_organization_fleet_names_the_repositories_a_scaled_pool_follows() {
        let p = problems("    organization: acme\n", "      scale: {max: 2}\n");
        assert!(
            p.iter().any(|(_, path, m)| path == "spec.pools[0].scale"
                && m.contains("spec.github.repositories")),
            "{p:?}"
        );
        let ok = problems(
            "    organization: acme\n    repositories: [widgets, acme/gears]\n",
            "      scale: {max: 2}\n",
        );
        assert!(ok.is_empty(), "{ok:?}");
        let other = problems(
            "    organization: acme\n    repositories: [other/widgets]\n",
            "      scale: {max: 2}\n",
        );
        assert_eq!(other[0].1, "spec.github.repositories[0]", "{other:?}");
        let repo = problems(
            "    repository: acme/widgets\n    repositories: [gears]\n",
            "      count: 1\n",
        );
        assert_eq!(repo[0].1, "spec.github.repositories", "{repo:?}");
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "umn", "umn-node-1", "0abc", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "UMN", "a_b", "a.b", "a b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn token_looking_values_are_secrets() {
        let cases: &[(&str, bool, bool)] = &[
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", false, true),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
                false,
                true,
            ),
            ("ghs_0123456789abcdefghij0123", false, true),
            ("token ghp_0123456789abcdefghijABCDEF", false, true),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIE...", false, true),
            ("0123456789abcdef0123456789abcdef01234567", true, true),
            (
                "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1u",
                true,
                true,
            ),
            // The same blobs outside auth fields are checksums or keys.
            ("0123456789abcdef0123456789abcdef01234567", false, false),
            ("GITHUB_TOKEN", true, false),
            ("/etc/hangar/token", true, false),
            (
                "/etc/hangar/app-0123456789abcdef0123456789abcdef.pem",
                true,
                false,
            ),
            ("ghp_", false, false),
            ("ghp_short", false, false),
            ("UMN", false, false),
        ];
        for (value, in_auth, want) in cases {
            assert_eq!(looks_like_secret(value, *in_auth), *want, "{value}");
        }
    }
}
