//! Runner tarballs on hangar's machine: fetched once per version and
//! architecture into `<state>/runners/`, checked against their SHA-256 while
//! they stream, and only then renamed to their final name, so a file under
//! that name is always a verified tarball. Guests get it from there (a
//! read-only volume), never from the internet.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

use chrono::{DateTime, Utc};

use crate::model::runner::{LocalTarball, RunnerChoice, RunnerTarball, VersionVerdict};
use crate::providers::github::releases::RunnerReleases;
use crate::providers::{ErrorKind, ProviderError};

/// The directory below the state directory.
pub const RUNNERS_DIR: &str = "runners";

/// No runner tarball is this large (2.330.0's x64 one is about 220 MB).
pub const MAX_TARBALL_BYTES: u64 = 1 << 30;

/// Redirects followed (github.com sends release downloads to a CDN).
const MAX_REDIRECTS: usize = 5;

const TARGET: &str = "runner tarball";

pub struct RunnerDist {
    dir: PathBuf,
    /// Files checked in this process: not hashed again.
    verified: Mutex<HashSet<PathBuf>>,
}

impl RunnerDist {
    pub fn new(state_dir: &Path) -> Self {
        RunnerDist {
            dir: state_dir.join(RUNNERS_DIR),
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Where `tarball` is kept.
    pub fn path_of(&self, tarball: &RunnerTarball) -> PathBuf {
        self.dir.join(tarball.file_name())
    }

    /// The tarball on disk, fetched from `url` unless a verified copy is
    /// already there. A copy that does not match is deleted and fetched
    /// again; a download that does not match leaves nothing behind.
    pub async fn fetch(
        &self,
        tarball: &RunnerTarball,
        url: &str,
    ) -> Result<LocalTarball, ProviderError> {
        let refused = |m: String| ProviderError::new(TARGET, ErrorKind::Refused, m);
        if !is_safe_name(&tarball.version) || !is_safe_name(&tarball.arch) {
            return Err(refused(format!(
                "runner {} {} is not a version and architecture",
                tarball.version, tarball.arch
            )));
        }
        if tarball.size > MAX_TARBALL_BYTES {
            return Err(refused(format!(
                "{}: {} bytes is more than a runner tarball holds",
                tarball.file_name(),
                tarball.size
            )));
        }
        let path = self.path_of(tarball);
        let local = LocalTarball {
            tarball: tarball.clone(),
            path: path.clone(),
        };
        if self.lock().contains(&path) {
            return Ok(local);
        }
        if path.exists() {
            let p = path.clone();
            let matches = tokio::task::spawn_blocking(move || file_sha256(&p))
                .await
                .ok()
                .and_then(Result::ok)
                .is_some_and(|(sha, size)| sha == tarball.sha256 && size == tarball.size);
            if matches {
                self.lock().insert(path);
                return Ok(local);
            }
            tracing::warn!(target: "hangar::runner", path = %path.display(),
                "runner tarball does not match its sha256; fetching it again");
            std::fs::remove_file(&path).map_err(|e| refused(format!("{}: {e}", path.display())))?;
        }
        crate::files::state::ensure_dir(&self.dir).map_err(|e| refused(e.to_string()))?;
        let partial = self.dir.join(format!(
            ".{}.{:016x}.part",
            tarball.file_name(),
            rand::random::<u64>()
        ));
        let fetched = download(url, tarball, &partial).await;
        let verdict = fetched.and_then(|()| {
            std::fs::rename(&partial, &path)
                .map_err(|e| refused(format!("{}: {e}", path.display())))
        });
        if let Err(e) = verdict {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        self.lock().insert(path);
        Ok(local)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Resolution and fetching together: what a pass asks for each pool's
/// runner (`runner.version` and the architecture).
pub struct RunnerSupply {
    pub releases: RunnerReleases,
    pub dist: RunnerDist,
}

impl RunnerSupply {
    /// Releases from the fleet's GitHub API URL, everything kept in
    /// `state_dir`.
    pub fn new(
        api_url: &str,
        state_dir: &Path,
        timeout: Option<std::time::Duration>,
    ) -> Result<Self, ProviderError> {
        Ok(RunnerSupply {
            releases: RunnerReleases::new(api_url, state_dir, timeout)?,
            dist: RunnerDist::new(state_dir),
        })
    }

    /// The verified tarball `choice` names for `arch` as of `now`, and
    /// GitHub's verdict on its version (a [`VersionVerdict::Warning`] is
    /// for `diff`/`status` to show; a refused version is an error).
    pub async fn tarball(
        &self,
        choice: &RunnerChoice,
        arch: &str,
        now: DateTime<Utc>,
    ) -> Result<(LocalTarball, VersionVerdict), ProviderError> {
        let resolved = self.releases.resolve(choice, arch, now).await?;
        if let VersionVerdict::Refused(m) = &resolved.verdict {
            return Err(ProviderError::new(TARGET, ErrorKind::Refused, m.clone()));
        }
        let local = self.dist.fetch(&resolved.tarball, &resolved.url).await?;
        Ok((local, resolved.verdict))
    }
}

/// Versions and architectures become file names: digits, letters, dots.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
}

fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// `https://`, or `http://` to a loopback address (the simulator).
fn allowed(uri: &hyper::Uri) -> bool {
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => uri.host().is_some_and(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// Stream `url` into `partial`, refusing more bytes than `tarball.size` and
/// any SHA-256 but `tarball.sha256`; the file is synced before it is judged.
async fn download(url: &str, tarball: &RunnerTarball, partial: &Path) -> Result<(), ProviderError> {
    let name = tarball.file_name();
    let refused =
        |m: String| ProviderError::new(TARGET, ErrorKind::Refused, format!("{name}: {m}"));
    let transient =
        |m: String| ProviderError::new(TARGET, ErrorKind::Transient, format!("{name}: {m}"));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| refused(format!("no TLS root certificates: {e}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let mut current: hyper::Uri = url.parse().map_err(|e| refused(format!("bad URL: {e}")))?;
    let mut redirects = 0;
    let mut response = loop {
        if !allowed(&current) {
            return Err(refused(
                "only https:// is fetched (plain http only on loopback)".into(),
            ));
        }
        let r = client
            .get(current.clone())
            .await
            .map_err(|e| transient(e.to_string()))?;
        if !r.status().is_redirection() {
            break r;
        }
        redirects += 1;
        if redirects > MAX_REDIRECTS {
            return Err(refused("too many redirects".into()));
        }
        let location = r
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| refused(format!("{} without a Location", r.status())))?;
        // A relative Location is resolved against the URL that answered.
        let next = url::Url::parse(&current.to_string())
            .and_then(|base| base.join(location))
            .map_err(|e| refused(format!("bad redirect: {e}")))?;
        current = next
            .as_str()
            .parse()
            .map_err(|e| refused(format!("bad redirect: {e}")))?;
    };
    let status = response.status();
    if status.is_server_error() {
        return Err(transient(format!("server answered {status}")));
    }
    if !status.is_success() {
        return Err(refused(format!("server answered {status}")));
    }
    let length = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|l| l != tarball.size) {
        return Err(refused(format!(
            "the server offers {} bytes, the release says {}",
            length.unwrap_or_default(),
            tarball.size
        )));
    }
    // A fresh file, never one planted under the name (nor a symlink).
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(partial)
        .map_err(|e| refused(format!("{}: {e}", partial.display())))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(frame) = response.body_mut().frame().await {
        let frame = frame.map_err(|e| transient(e.to_string()))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        size += chunk.len() as u64;
        if size > tarball.size {
            return Err(refused(format!(
                "more than the {} bytes the release says",
                tarball.size
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| refused(format!("{}: {e}", partial.display())))?;
    }
    file.sync_all()
        .map_err(|e| refused(format!("{}: {e}", partial.display())))?;
    if size != tarball.size {
        return Err(transient(format!(
            "{size} of {} bytes arrived",
            tarball.size
        )));
    }
    let actual = hex::encode(hasher.finalize());
    if actual != tarball.sha256.to_ascii_lowercase() {
        return Err(refused(format!(
            "sha256 is {actual}, expected {}: the download was discarded",
            tarball.sha256
        )));
    }
    Ok(())
}
