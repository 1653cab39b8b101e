//! The runner list's pages with their ETags, kept between processes, so
//! that `reconcile --once` from cron, `diff` and `status` ask GitHub as the
//! daemon does: every page with `If-None-Match`, an unchanged list answered
//! by free 304s.
//!
//! The file (`<state dir>/<fleet>.github.json`) holds what GitHub's list
//! answered: runner ids, names, labels, status and busy, and each page's
//! ETag; no token, no JIT config. It is discarded when it cannot be read,
//! was written by another hangar version, or for another API URL or scope;
//! it is written atomically, and only after a pass in which a page changed.
//! Nothing is trusted blindly: a 304 is GitHub saying the page is what the
//! file holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CachedPage;
use crate::files::state;

/// Bumped when the file's shape changes (so is the hangar version).
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    format: u32,
    hangar: String,
    api_url: String,
    scope: String,
    /// Keyed by the page's path and query.
    pages: HashMap<String, CachedPage>,
}

/// Where the pages are kept, and for which list. Public for the fuzz
/// target `state`, which reads arbitrary bytes through [`SavedPages::load`];
/// hangar itself keeps them through
/// [`GithubRegistry::with_saved_pages`](super::GithubRegistry::with_saved_pages).
#[derive(Debug, Clone)]
pub struct SavedPages {
    path: PathBuf,
    api_url: String,
    scope: String,
}

impl SavedPages {
    /// The file `path`, for the list of `scope` at `api_url`.
    pub fn new(path: &Path, api_url: &str, scope: &str) -> Self {
        SavedPages {
            path: path.to_path_buf(),
            api_url: api_url.to_string(),
            scope: scope.to_string(),
        }
    }

    /// The pages as last saved for this list; none when there is no file
    /// or it is not one to use.
    pub fn load(&self) -> HashMap<String, CachedPage> {
        let bytes = match state::read(&self.path, state::MAX_STATE_BYTES) {
            Ok(Some(b)) => b,
            Ok(None) => return HashMap::new(),
            Err(e) => {
                tracing::debug!(target: "hangar::github", error = %e, "saved runner pages unreadable");
                return HashMap::new();
            }
        };
        match serde_json::from_slice::<Saved>(&bytes) {
            Ok(s)
                if s.format == FORMAT
                    && s.hangar == env!("CARGO_PKG_VERSION")
                    && s.api_url == self.api_url
                    && s.scope == self.scope =>
            {
                s.pages
            }
            Ok(_) => {
                tracing::debug!(target: "hangar::github", "saved runner pages are another version's or list's: not used");
                HashMap::new()
            }
            Err(e) => {
                tracing::debug!(target: "hangar::github", error = %e, "saved runner pages unreadable");
                HashMap::new()
            }
        }
    }

    /// Replace the file with `pages`. A failure is logged: the next process
    /// asks without ETags.
    pub fn save(&self, pages: &HashMap<String, CachedPage>) {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct SavedRef<'a> {
            format: u32,
            hangar: &'a str,
            api_url: &'a str,
            scope: &'a str,
            pages: &'a HashMap<String, CachedPage>,
        }
        let written = serde_json::to_vec(&SavedRef {
            format: FORMAT,
            hangar: env!("CARGO_PKG_VERSION"),
            api_url: &self.api_url,
            scope: &self.scope,
            pages,
        })
        .map_err(|e| e.to_string())
        .and_then(|bytes| state::write_atomic(&self.path, &bytes).map_err(|e| e.to_string()));
        if let Err(e) = written {
            tracing::warn!(target: "hangar::github", error = %e, "cannot save the runner list's pages");
        }
    }
}
