//! Which runner tarball a pool gets: the releases of actions/runner, read
//! from the fleet's GitHub API URL (`GET /repos/actions/runner/releases`,
//! `.../releases/tags/{tag}`: https://docs.github.com/rest/releases/releases).
//!
//! The list is cached in the state directory with its `ETag` and asked
//! again at most every [`RECHECK`]; the question is conditional
//! (`If-None-Match`), and a `304` does not count against the rate limit
//! (https://docs.github.com/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate).
//! The SHA-256 of a tarball is the release asset's `digest`
//! (`sha256:<hex>`), unless the fleet file pins one. actions/runner is a
//! public repository, so no credential is sent and none is cached.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use http::header::{HeaderName, HeaderValue, IF_NONE_MATCH};
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::transport::Transport;
use crate::model::runner::{
    tarball_name, version_verdict, PublishedRelease, RunnerChoice, RunnerTarball, RunnerVersion,
    VersionVerdict,
};
use crate::providers::{ErrorKind, ProviderError};

/// How often the release list is asked again, at most.
pub const RECHECK: Duration = Duration::hours(1);

/// The cache file in the state directory.
pub const CACHE_FILE: &str = "runner-releases.json";

/// Releases per page (GitHub's maximum): one page covers years of runner
/// releases, far more than the 30-day window needs.
const PER_PAGE: u32 = 100;

/// A cache file larger than this is not ours: read as absent.
const MAX_CACHE_BYTES: u64 = 4 << 20;

const REPO: &str = "actions/runner";

/// A tarball to fetch, where from, and whether GitHub still accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRunner {
    pub tarball: RunnerTarball,
    /// The asset's `browser_download_url`.
    pub url: String,
    pub verdict: VersionVerdict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedAsset {
    name: String,
    size: u64,
    /// `sha256:<hex>`, or none for assets uploaded before GitHub kept digests.
    digest: Option<String>,
    browser_download_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedRelease {
    tag_name: String,
    #[serde(default)]
    prerelease: bool,
    #[serde(default)]
    draft: bool,
    published_at: Option<DateTime<Utc>>,
    assets: Vec<CachedAsset>,
}

impl CachedRelease {
    fn version(&self) -> Option<RunnerVersion> {
        RunnerVersion::parse(&self.tag_name)
    }

    fn counts(&self) -> bool {
        !self.prerelease && !self.draft && self.version().is_some()
    }
}

/// What the cache file holds (no credential: the route is public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ReleaseCache {
    api_url: String,
    etag: Option<String>,
    checked_at: DateTime<Utc>,
    /// The first page of the list, newest first.
    releases: Vec<CachedRelease>,
    /// Releases read by tag because they were not on the list's page.
    #[serde(default)]
    tagged: Vec<CachedRelease>,
}

pub struct RunnerReleases {
    transport: Transport,
    api_url: String,
    cache_path: PathBuf,
    recheck: Duration,
    cache: Mutex<Option<ReleaseCache>>,
}

impl std::fmt::Debug for RunnerReleases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerReleases")
            .field("api_url", &self.api_url)
            .field("cache_path", &self.cache_path)
            .finish_non_exhaustive()
    }
}

impl RunnerReleases {
    /// Releases from `api_url` (the fleet's `github.apiUrl`), cached in
    /// `state_dir`.
    pub fn new(
        api_url: &str,
        state_dir: &Path,
        timeout: Option<StdDuration>,
    ) -> Result<Self, ProviderError> {
        let api_url = api_url.trim_end_matches('/').to_string();
        Ok(RunnerReleases {
            transport: Transport::new(&api_url, format!("repos/{REPO}"), timeout)?,
            api_url,
            cache_path: state_dir.join(CACHE_FILE),
            recheck: RECHECK,
            cache: Mutex::new(None),
        })
    }

    /// Ask again after `interval` instead of [`RECHECK`].
    pub fn with_recheck(mut self, interval: Duration) -> Self {
        self.recheck = interval;
        self
    }

    /// The tarball `choice` names for `arch` (`x64`, `arm64`, `arm`) as of
    /// `now`.
    pub async fn resolve(
        &self,
        choice: &RunnerChoice,
        arch: &str,
        now: DateTime<Utc>,
    ) -> Result<ResolvedRunner, ProviderError> {
        let cache = self.fresh_list(now).await?;
        let release = match choice {
            RunnerChoice::Latest => cache
                .releases
                .iter()
                .filter(|r| r.counts())
                .max_by_key(|r| (r.published_at, r.version()))
                .cloned()
                .ok_or_else(|| self.refused("actions/runner has no published release"))?,
            RunnerChoice::Pinned { version, .. } => {
                self.release_of(cache.clone(), *version).await?
            }
        };
        let version = release
            .version()
            .ok_or_else(|| self.refused(format!("tag {} is not a version", release.tag_name)))?;
        let name = tarball_name(arch, &version.to_string());
        let asset = release
            .assets
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| self.refused(format!("release {} has no {name}", release.tag_name)))?;
        let digest = asset
            .digest
            .as_deref()
            .and_then(|d| d.strip_prefix("sha256:"))
            .map(str::to_ascii_lowercase)
            .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
        let sha256 = match (choice, digest) {
            (
                RunnerChoice::Pinned {
                    sha256: Some(pin), ..
                },
                Some(d),
            ) if *pin != d => {
                return Err(self.refused(format!(
                    "{name}: the pinned sha256 {pin} is not the release's digest {d}"
                )))
            }
            (
                RunnerChoice::Pinned {
                    sha256: Some(pin), ..
                },
                _,
            ) => pin.clone(),
            (_, Some(d)) => d,
            (_, None) => {
                return Err(self.refused(format!(
                "{name} has no sha256 digest on GitHub: pin `runner.version` with `runner.sha256`"
            )))
            }
        };
        let published: Vec<PublishedRelease> = cache
            .releases
            .iter()
            .chain(&cache.tagged)
            .filter(|r| r.counts())
            .filter_map(|r| {
                Some(PublishedRelease {
                    version: r.version()?,
                    published_at: r.published_at?,
                })
            })
            .collect();
        Ok(ResolvedRunner {
            tarball: RunnerTarball {
                version: version.to_string(),
                arch: arch.to_string(),
                sha256,
                size: asset.size,
            },
            url: asset.browser_download_url.clone(),
            verdict: version_verdict(version, &published, now),
        })
    }

    fn refused(&self, message: impl Into<String>) -> ProviderError {
        self.transport.error(ErrorKind::Refused, message)
    }

    /// The cached list, asked again when older than the interval. A failed
    /// re-check keeps a cached list in use (the releases of a week ago still
    /// name good tarballs); with no cache, the failure is the answer.
    async fn fresh_list(&self, now: DateTime<Utc>) -> Result<ReleaseCache, ProviderError> {
        let cached = self.cached();
        if let Some(c) = &cached {
            if now < c.checked_at + self.recheck && now >= c.checked_at {
                return Ok(c.clone());
            }
        }
        let path = format!("/repos/{REPO}/releases?per_page={PER_PAGE}");
        let etag = cached.as_ref().and_then(|c| c.etag.clone());
        let extra: Vec<(HeaderName, HeaderValue)> = etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
            .map(|v| vec![(IF_NONE_MATCH, v)])
            .unwrap_or_default();
        const WHAT: &str = "runner releases";
        let answer = match self
            .transport
            .send(WHAT, Method::GET, &path, None, &extra, None)
            .await
        {
            Ok(a) => a,
            Err(e) => return self.stale_or(cached, e),
        };
        let next = match (answer.status, cached.clone()) {
            (StatusCode::NOT_MODIFIED, Some(mut c)) => {
                c.checked_at = now;
                c
            }
            (StatusCode::OK, old) => ReleaseCache {
                api_url: self.api_url.clone(),
                etag: answer.header("etag").map(str::to_owned),
                checked_at: now,
                releases: match answer.json(self.transport.target(), WHAT) {
                    Ok(r) => r,
                    Err(e) => return self.stale_or(cached, e),
                },
                tagged: old.map(|c| c.tagged).unwrap_or_default(),
            },
            _ => {
                let e = self.transport.classify(WHAT, &answer);
                return self.stale_or(cached, e);
            }
        };
        self.store(&next);
        Ok(next)
    }

    fn stale_or(
        &self,
        cached: Option<ReleaseCache>,
        error: ProviderError,
    ) -> Result<ReleaseCache, ProviderError> {
        match cached {
            Some(c) => {
                tracing::warn!(target: "hangar::github", error = %error.message,
                    "re-checking runner releases failed; using the list of {}", c.checked_at);
                Ok(c)
            }
            None => Err(error),
        }
    }

    /// A pinned release: from the list, else read once by its tag.
    async fn release_of(
        &self,
        cache: ReleaseCache,
        version: RunnerVersion,
    ) -> Result<CachedRelease, ProviderError> {
        if let Some(r) = cache
            .releases
            .iter()
            .chain(&cache.tagged)
            .find(|r| r.version() == Some(version))
        {
            return Ok(r.clone());
        }
        const WHAT: &str = "runner release";
        let answer = self
            .transport
            .send(
                WHAT,
                Method::GET,
                &format!("/repos/{REPO}/releases/tags/v{version}"),
                None,
                &[],
                None,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(self.refused(format!("actions/runner has no release {version}")));
        }
        if answer.status != StatusCode::OK {
            return Err(self.transport.classify(WHAT, &answer));
        }
        let release: CachedRelease = answer.json(self.transport.target(), WHAT)?;
        let mut next = cache;
        next.tagged.push(release.clone());
        self.store(&next);
        Ok(release)
    }

    /// In memory, else the file; a file that cannot be read, parsed, or is
    /// for another API URL is as good as none (the list is asked again).
    fn cached(&self) -> Option<ReleaseCache> {
        let mut mem = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if mem.is_none() {
            *mem = crate::files::state::read(&self.cache_path, MAX_CACHE_BYTES)
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<ReleaseCache>(&b).ok())
                .filter(|c| c.api_url == self.api_url);
        }
        mem.clone()
    }

    fn store(&self, cache: &ReleaseCache) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(cache.clone());
        let written = serde_json::to_vec_pretty(cache)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                crate::files::state::write_atomic(&self.cache_path, &b).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            // The next run asks again: a cost, not a failure.
            tracing::warn!(target: "hangar::github", path = %self.cache_path.display(), error = %e,
                "saving the runner release cache failed");
        }
    }
}
