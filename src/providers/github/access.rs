//! Which repositories' jobs an organization's runner groups admit, for the
//! scaler: the groups list (`GET /orgs/{org}/actions/runner-groups`: each
//! group's `visibility` and `allows_public_repositories`) and, for a group
//! of visibility `selected`, its repositories
//! (`GET /orgs/{org}/actions/runner-groups/{id}/repositories`). Both are
//! asked with the ETag of their last answer, so an unchanged group costs no
//! rate limit (304); the engine asks only in a pass with a queued job for
//! a pool in a group, so a change made on GitHub is followed at the next
//! such pass. https://docs.github.com/rest/actions/self-hosted-runner-groups

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;

use super::jobs::parse;
use super::{GithubRegistry, Scope, PAGE_SIZE};
use crate::plan::model::{GroupAccess, GroupVisibility};
use crate::providers::ProviderError;

#[derive(Deserialize)]
struct GroupList {
    runner_groups: Vec<ApiGroup>,
}

#[derive(Deserialize)]
pub(super) struct ApiGroup {
    id: u64,
    name: String,
    #[serde(default)]
    default: bool,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default)]
    allows_public_repositories: Option<bool>,
}

#[derive(Deserialize)]
struct RepositoryList {
    repositories: Vec<ApiRepository>,
}

#[derive(Deserialize)]
struct ApiRepository {
    full_name: String,
}

impl GithubRegistry {
    /// The access of `groups` (names; `""` the default group), by the name
    /// asked; a group not found, or of a visibility GitHub did not document,
    /// is left out (its jobs count by labels), and said in a debug log.
    pub(super) async fn read_group_access(
        &self,
        groups: &[String],
    ) -> Result<BTreeMap<String, GroupAccess>, ProviderError> {
        let Scope::Organization { org } = &self.scope else {
            return Ok(BTreeMap::new());
        };
        if groups.is_empty() {
            return Ok(BTreeMap::new());
        }
        let listed = self.runner_groups(org).await?;
        // The names minted into stay current too (a group made again has a
        // new id).
        *self.groups.lock().await = Some(group_ids(&listed));

        let mut out = BTreeMap::new();
        for name in groups {
            let wanted = name.to_lowercase();
            let found = listed.iter().find(|g| {
                if wanted.is_empty() {
                    g.default
                } else {
                    g.name.to_lowercase() == wanted
                }
            });
            let Some(g) = found else {
                tracing::debug!(target: "hangar::github", group = %name, "runner group not found: its pools' jobs count by labels");
                continue;
            };
            let visibility = match g.visibility.as_deref() {
                Some("all") => GroupVisibility::All,
                Some("private") => GroupVisibility::Private,
                Some("selected") => {
                    GroupVisibility::Selected(self.group_repositories(org, g.id).await?)
                }
                other => {
                    tracing::debug!(target: "hangar::github", group = %name, visibility = ?other, "runner group visibility not known: its pools' jobs count by labels");
                    continue;
                }
            };
            out.insert(
                name.clone(),
                GroupAccess {
                    visibility,
                    // Missing (an older GHES): not a reason to refuse.
                    allows_public: g.allows_public_repositories.unwrap_or(true),
                },
            );
        }
        Ok(out)
    }

    /// Every runner group of `org`, each page asked with the ETag of its
    /// last answer.
    pub(super) async fn runner_groups(&self, org: &str) -> Result<Vec<ApiGroup>, ProviderError> {
        let target = self.transport.target().to_string();
        const WHAT: &str = "list runner groups";
        let first = format!("/orgs/{org}/actions/runner-groups?per_page={PAGE_SIZE}");
        self.all_pages(WHAT, first, |body| {
            let list: GroupList = parse(&target, WHAT, body)?;
            Ok(list.runner_groups)
        })
        .await
    }

    /// The repositories (`OWNER/REPO`, lowercased) of a `selected` group.
    async fn group_repositories(
        &self,
        org: &str,
        id: u64,
    ) -> Result<BTreeSet<String>, ProviderError> {
        let target = self.transport.target().to_string();
        const WHAT: &str = "list runner group repositories";
        let first =
            format!("/orgs/{org}/actions/runner-groups/{id}/repositories?per_page={PAGE_SIZE}");
        let repos = self
            .all_pages(WHAT, first, |body| {
                let list: RepositoryList = parse(&target, WHAT, body)?;
                Ok(list.repositories)
            })
            .await?;
        Ok(repos
            .into_iter()
            .map(|r| r.full_name.to_lowercase())
            .collect())
    }
}

/// Group ids by lowercased name.
pub(super) fn group_ids(groups: &[ApiGroup]) -> HashMap<String, u64> {
    groups
        .iter()
        .map(|g| (g.name.to_lowercase(), g.id))
        .collect()
}
