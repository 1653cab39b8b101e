//! The GitHub provider against the in-process simulator, over loopback HTTP:
//! both scopes, both kinds of authentication, pagination and ETags, busy
//! removal, faults with backoff under paused time, and secrets kept out of
//! every log line, error and Debug output.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar::plan::model::RunnerStatus;
use hangar::providers::github::{Auth, GithubConfig, GithubRegistry, Scope};
use hangar::providers::{ErrorKind, RemoveOutcome, RunnerRegistry};
use hangar::providers::{RetryPolicy, Retrying};
use hangar::secret::Secret;
use hangar::sim::{self, Fault, FaultKind, Latency, RegisterRunner, SimApp, SimConfig, SimHandle};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

#[path = "support/raw_http.rs"]
mod raw_http;

const TOKEN: &str = "sim-test-token";
const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 77;

// TEST-ONLY RSA keys, generated with `openssl genrsa -traditional 2048` for these
// tests alone. They protect nothing and must never be used for a real GitHub App.
const TEST_APP_KEY: &str = include_str!("fixtures/github-app/private-key.pem");
const TEST_APP_PUBLIC_KEY: &str = include_str!("fixtures/github-app/public-key.pem");
/// A key the simulator does not know.
const OTHER_KEY: &str = include_str!("fixtures/github-app/other-private-key.pem");

fn repo() -> Scope {
    Scope::Repository {
        owner: "ldmx".into(),
        repo: "images".into(),
    }
}

fn org() -> Scope {
    Scope::Organization {
        org: "ldmx-org".into(),
    }
}

async fn start_sim() -> SimHandle {
    sim::start(SimConfig::new(TOKEN)).await.expect("sim starts")
}

async fn start_sim_with_app() -> SimHandle {
    let mut config = SimConfig::new(TOKEN);
    config.app = Some(SimApp {
        app_id: APP_ID,
        installation_id: INSTALLATION_ID,
        public_key_pem: TEST_APP_PUBLIC_KEY.into(),
    });
    sim::start(config).await.expect("sim starts")
}

fn registry(sim: &SimHandle, scope: Scope, auth: Auth) -> GithubRegistry {
    GithubRegistry::new(GithubConfig {
        scope,
        api_url: sim.base_url.clone(),
        auth,
        // No client timeouts: under paused time they would fire early.
        timeout: None,
    })
    .expect("registry")
}

fn token(t: &str) -> Auth {
    Auth::Token(Secret::new(t.to_string()))
}

fn app_auth(key: &str) -> Auth {
    Auth::App {
        app_id: APP_ID,
        installation_id: INSTALLATION_ID,
        private_key_pem: Secret::new(key.to_string()),
    }
}

fn labels(ls: &[&str]) -> Vec<String> {
    ls.iter().map(|s| s.to_string()).collect()
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(30),
        max_total_wait: Duration::from_secs(600),
    }
}

const LIST: &str = "GET /repos/{owner}/{repo}/actions/runners";
const JIT: &str = "generate-jitconfig";

/// The ephemeral life of a slot: mint, boot, job, done; then a persistent
/// registration; removal answers in every state.
async fn full_cycle(sim: &SimHandle, reg: &dyn RunnerRegistry, scope_path: &str) {
    assert!(reg.observe().await.unwrap().is_empty());
    let wanted = labels(&["hangar-ldmx", "UMN"]);
    let jit = reg
        .jit_config("ldmx-umn-0", &wanted, "default")
        .await
        .unwrap();
    let hash = hex::encode(Sha256::digest(jit.config.expose().as_bytes()));
    let minted = sim.runner(jit.runner_id).expect("registered");
    assert_eq!(minted.jit_config_sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(minted.runner_group_id, 1);

    let seen = reg.observe().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].name, "ldmx-umn-0");
    assert_eq!(seen[0].status, RunnerStatus::Offline);
    for l in &wanted {
        assert!(seen[0].labels.contains(l), "{:?}", seen[0].labels);
    }

    // The guest runs `run.sh --jitconfig`, takes a job.
    sim.run_jit(jit.config.expose()).unwrap();
    sim.start_job(jit.runner_id).unwrap();
    let seen = reg.observe().await.unwrap();
    assert_eq!(seen[0].status, RunnerStatus::Online);
    assert!(seen[0].busy);
    assert_eq!(
        reg.remove(jit.runner_id).await.unwrap(),
        RemoveOutcome::Busy
    );
    // An ephemeral runner leaves after its job.
    sim.finish_job(jit.runner_id).unwrap();
    assert_eq!(
        reg.remove(jit.runner_id).await.unwrap(),
        RemoveOutcome::Gone
    );

    // A persistent slot: config.sh with a registration token.
    let token = reg.registration_token().await.unwrap();
    let persistent = sim
        .register_runner(&RegisterRunner {
            scope: scope_path.into(),
            name: "ldmx-umn-1".into(),
            labels: wanted.clone(),
            token: token.expose().clone(),
            group: None,
            replace: false,
            ephemeral: false,
            no_default_labels: false,
        })
        .unwrap();
    sim.set_online(persistent.id, true).unwrap();
    let seen = reg.observe().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, persistent.id);
    assert_eq!(seen[0].status, RunnerStatus::Online);
    assert!(!seen[0].busy);
    assert!(seen[0].labels.contains(&"self-hosted".to_string()));
    assert_eq!(
        reg.remove(persistent.id).await.unwrap(),
        RemoveOutcome::Removed
    );
    assert!(reg.observe().await.unwrap().is_empty());

    let budget = reg.rate_budget().expect("budget seen");
    assert_eq!(budget.limit, 5000);
    assert_eq!(budget.remaining, sim.rate().remaining);
    assert!(budget.remaining < 5000);
}

#[tokio::test]
async fn repository_scope_with_a_token_runs_a_full_cycle() {
    let sim = start_sim().await;
    let reg = registry(&sim, repo(), token(TOKEN));
    assert_eq!(reg.scope(), "repos/ldmx/images");
    assert_eq!(
        reg.registration_url(),
        format!("{}/ldmx/images", sim.base_url)
    );
    full_cycle(&sim, &reg, "repos/ldmx/images").await;
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn organization_scope_with_an_app_runs_a_full_cycle() {
    let sim = start_sim_with_app().await;
    let reg = registry(&sim, org(), app_auth(TEST_APP_KEY));
    assert_eq!(reg.registration_url(), format!("{}/ldmx-org", sim.base_url));
    full_cycle(&sim, &reg, "orgs/ldmx-org").await;
    // One installation token served the whole cycle.
    assert_eq!(sim.stats().count("access_tokens"), 1);
    assert_eq!(sim.stats().count_status("access_tokens", 201), 1);
}

#[tokio::test]
async fn an_expired_or_revoked_installation_token_is_replaced_once() {
    let sim = start_sim_with_app().await;
    let reg = registry(&sim, org(), app_auth(TEST_APP_KEY));
    reg.observe().await.unwrap();
    reg.observe().await.unwrap();
    assert_eq!(sim.stats().count("access_tokens"), 1, "cached");
    sim.revoke_installation_tokens();
    // The 401 drops the cached token; the request goes again with a new one.
    reg.jit_config("ldmx-umn-0", &labels(&["hangar-ldmx"]), "default")
        .await
        .unwrap();
    let stats = sim.stats();
    assert_eq!(stats.count("access_tokens"), 2);
    assert_eq!(stats.by_status.get(&401), Some(&1));
    assert_eq!(stats.count_status(JIT, 201), 1);
    // Revoked again, and the new token is refused too: one retry only.
    sim.revoke_installation_tokens();
    let mut config = SimConfig::new(TOKEN);
    config.app = None;
    let no_app = sim::start(config).await.unwrap();
    let reg2 = registry(&no_app, org(), app_auth(TEST_APP_KEY));
    let err = reg2.observe().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert_eq!(no_app.stats().count("access_tokens"), 1);
    assert_eq!(no_app.stats().count(LIST), 0);
}

#[tokio::test]
async fn an_app_key_the_simulator_does_not_know_is_refused() {
    let sim = start_sim_with_app().await;
    let reg = registry(&sim, org(), app_auth(OTHER_KEY));
    let err = reg.observe().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.message.contains("401"), "{err}");
    let bad = GithubRegistry::new(GithubConfig {
        scope: org(),
        api_url: sim.base_url.clone(),
        auth: app_auth("not a key"),
        timeout: None,
    })
    .unwrap_err();
    assert_eq!(bad.kind, ErrorKind::Refused);
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_githubs_message() {
    let sim = start_sim().await;
    let reg = registry(&sim, repo(), token("wrong"));
    let err = reg.observe().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert_eq!(err.message, "list runners: 401: bad credentials");
    assert_eq!(err.target, "repos/ldmx/images");
}

#[tokio::test]
async fn organization_runner_groups_are_resolved_by_name() {
    let sim = start_sim().await;
    let gpu = sim.add_runner_group("ldmx-org", "GPU").unwrap();
    let reg = registry(&sim, org(), token(TOKEN));
    let jit = reg
        .jit_config("ldmx-gpu-0", &labels(&["hangar-ldmx"]), "gpu")
        .await
        .unwrap();
    assert_eq!(sim.runner(jit.runner_id).unwrap().runner_group_id, gpu);
    // Cached: a second mint in the same group lists groups no more.
    reg.jit_config("ldmx-gpu-1", &labels(&["hangar-ldmx"]), "GPU")
        .await
        .unwrap();
    assert_eq!(sim.stats().count("runner-groups"), 1);
    let err = reg
        .jit_config("ldmx-x-0", &labels(&["hangar-ldmx"]), "nope")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.message.contains("\"nope\""), "{err}");

    let repo_reg = registry(&sim, repo(), token(TOKEN));
    let err = repo_reg
        .jit_config("ldmx-x-0", &labels(&["hangar-ldmx"]), "gpu")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
}

#[tokio::test]
async fn organization_runner_groups_access_is_read_by_name_and_then_from_the_etag_cache() {
    use hangar::plan::model::{GroupAccess, GroupVisibility};
    let sim = start_sim().await;
    let auth = format!("Bearer {TOKEN}");
    let patch = |id: u64, body: serde_json::Value| {
        let (sim, auth) = (&sim, auth.clone());
        async move {
            let path = format!("/orgs/ldmx-org/actions/runner-groups/{id}");
            let headers = [("authorization", auth.as_str())];
            let a = raw_http::http(sim, "PATCH", &path, &headers, Some(body)).await;
            assert_eq!(a.status, 200, "{}", a.body);
        }
    };
    let gpu = sim.add_runner_group("ldmx-org", "GPU").unwrap();
    let private = sim.add_runner_group("ldmx-org", "Priv").unwrap();
    sim.add_runner_group("ldmx-org", "Open").unwrap();
    patch(
        gpu,
        serde_json::json!({"visibility": "selected",
            "selected_repository_ids": [sim::repo_id("ldmx-org/widgets")]}),
    )
    .await;
    patch(
        private,
        serde_json::json!({"visibility": "private", "allows_public_repositories": true}),
    )
    .await;
    // A workflow run makes the repository known; its jobs say it is private.
    sim.enqueue_job(&sim::EnqueueJob::new("ldmx-org/widgets", &["gpu"]))
        .unwrap();
    let reg = registry(&sim, org(), token(TOKEN));
    let jobs = reg.jobs(&["ldmx-org/widgets".into()]).await.unwrap();
    assert_eq!(jobs[0].private, Some(true), "{jobs:?}");

    let asked: Vec<String> = ["gpu", "Priv", "Open", "", "missing"]
        .map(String::from)
        .to_vec();
    sim.reset_stats();
    let access = reg.group_access(&asked).await.unwrap();
    let widgets = ["ldmx-org/widgets".to_string()].into_iter().collect();
    assert_eq!(
        access.get("gpu"),
        Some(&GroupAccess {
            visibility: GroupVisibility::Selected(widgets),
            allows_public: false
        })
    );
    assert_eq!(
        access.get("Priv"),
        Some(&GroupAccess {
            visibility: GroupVisibility::Private,
            allows_public: true
        })
    );
    assert_eq!(access["Open"].visibility, GroupVisibility::All);
    assert_eq!(
        access[""].visibility,
        GroupVisibility::All,
        "the default group"
    );
    assert!(!access.contains_key("missing"), "{access:?}");
    // The groups list and GPU's repositories.
    assert_eq!(sim.stats().count("runner-groups"), 2);

    // Unchanged: both answered 304, free.
    sim.reset_stats();
    assert_eq!(reg.group_access(&asked).await.unwrap(), access);
    let stats = sim.stats();
    assert_eq!(stats.count_status("runner-groups", 304), 2, "{stats:?}");
    assert_eq!(stats.rate_limited_cost, 0, "{stats:?}");
    // The ids read with it serve a mint into any group: no list of its own.
    sim.reset_stats();
    let jit = reg
        .jit_config("ldmx-open-0", &labels(&["hangar-ldmx"]), "open")
        .await
        .unwrap();
    assert_eq!(sim.stats().count("runner-groups"), 0);
    assert_ne!(sim.runner(jit.runner_id).unwrap().runner_group_id, 1);

    // Changed on GitHub: read again at once.
    patch(gpu, serde_json::json!({"visibility": "all"})).await;
    let again = reg.group_access(&asked).await.unwrap();
    assert_eq!(again["gpu"].visibility, GroupVisibility::All);

    // A repository's runners are in no group: nothing asked.
    let repo_reg = registry(&sim, repo(), token(TOKEN));
    sim.reset_stats();
    assert!(repo_reg.group_access(&asked).await.unwrap().is_empty());
    assert_eq!(sim.stats().total, 0);
}

#[tokio::test]
async fn a_taken_name_and_bad_labels_are_refused() {
    let sim = start_sim().await;
    let reg = registry(&sim, repo(), token(TOKEN));
    reg.jit_config("ldmx-umn-0", &labels(&["a"]), "default")
        .await
        .unwrap();
    let err = reg
        .jit_config("ldmx-umn-0", &labels(&["a"]), "default")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.message.contains("already exists"), "{err}");
    let err = reg
        .jit_config("ldmx-umn-1", &labels(&["a,b"]), "default")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.message.contains("422"), "{err}");
}

#[tokio::test]
async fn observe_reads_all_pages_then_answers_from_the_etag_cache() {
    let sim = start_sim().await;
    sim.add_runners("repos/ldmx/images", "other", 250, &labels(&["x"]))
        .unwrap();
    let reg = registry(&sim, repo(), token(TOKEN));
    let first = reg.observe().await.unwrap();
    assert_eq!(first.len(), 250);
    let mut ids: Vec<u64> = first.iter().map(|r| r.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 250);
    let stats = sim.stats();
    assert_eq!(stats.count(LIST), 3);
    assert_eq!(stats.count_status(LIST, 200), 3);
    let cost = sim.rate().remaining;

    // Unchanged: every page is a 304, and free.
    let second = reg.observe().await.unwrap();
    assert_eq!(second, first);
    let stats = sim.stats();
    assert_eq!(stats.count(LIST), 6);
    assert_eq!(stats.count_status(LIST, 304), 3);
    assert_eq!(stats.not_modified, 3);
    assert_eq!(sim.rate().remaining, cost);
    assert_eq!(reg.rate_budget().unwrap().remaining, cost);

    // One runner on page 2 goes offline: only that page is sent again.
    let on_page_two = first[150].id;
    sim.set_online(on_page_two, false).unwrap();
    let third = reg.observe().await.unwrap();
    let changed = third.iter().find(|r| r.id == on_page_two).unwrap();
    assert_eq!(changed.status, RunnerStatus::Offline);
    let stats = sim.stats();
    assert_eq!(stats.count_status(LIST, 200), 4);
    assert_eq!(stats.count_status(LIST, 304), 5);
}

#[tokio::test]
async fn the_bare_registry_never_retries_by_itself() {
    let sim = start_sim().await;
    let reg = registry(&sim, repo(), token(TOKEN));
    sim.inject(Fault::new(FaultKind::ServerError { status: 500 }, 3));
    let err = reg.observe().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(sim.stats().count(LIST), 1, "octocrab must not retry");
    sim.clear_faults();
    sim.inject(Fault::new(FaultKind::ServerError { status: 502 }, 1).on_route(JIT));
    let err = reg
        .jit_config("n", &labels(&["a"]), "default")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(sim.stats().count(JIT), 1, "a POST is never resent");
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_growing_backoff() {
    let sim = start_sim().await;
    let reg = Retrying::new(registry(&sim, repo(), token(TOKEN)), fast_policy());
    sim.inject(Fault::new(FaultKind::ServerError { status: 502 }, 2));
    let t0 = Instant::now();
    reg.observe().await.unwrap();
    let waited = t0.elapsed();
    // Two backoffs: [1, 2] s then [2, 4] s.
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    assert!(waited <= Duration::from_secs(7), "{waited:?}");
    assert_eq!(sim.stats().count_status(LIST, 502), 2);
    assert_eq!(sim.stats().count_status(LIST, 200), 1);
}

#[tokio::test(start_paused = true)]
async fn rate_limits_wait_as_long_as_github_asks() {
    let sim = start_sim().await;
    let reg = Retrying::new(registry(&sim, repo(), token(TOKEN)), fast_policy());
    sim.inject(Fault::new(
        FaultKind::RateLimited {
            retry_after_secs: 30,
        },
        1,
    ));
    let t0 = Instant::now();
    reg.registration_token().await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_secs(30),
        "{:?}",
        t0.elapsed()
    );

    sim.inject(Fault::new(
        FaultKind::SecondaryLimit {
            retry_after_secs: Some(7),
        },
        1,
    ));
    let t1 = Instant::now();
    reg.observe().await.unwrap();
    assert!(t1.elapsed() >= Duration::from_secs(7), "{:?}", t1.elapsed());
    assert!(t1.elapsed() < Duration::from_secs(30), "{:?}", t1.elapsed());

    // Without retry-after, a secondary limit waits GitHub's minute.
    sim.inject(Fault::new(
        FaultKind::SecondaryLimit {
            retry_after_secs: None,
        },
        1,
    ));
    let bare = registry(&sim, repo(), token(TOKEN));
    let err = bare.observe().await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::RateLimited {
            retry_after_secs: 60
        }
    );

    // The primary budget spent: wait for the reset.
    sim.set_rate_remaining(0);
    let err = bare.observe().await.unwrap_err();
    match err.kind {
        ErrorKind::RateLimited { retry_after_secs } => {
            assert!(
                (3000..=3600).contains(&retry_after_secs),
                "{retry_after_secs}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(bare.rate_budget().unwrap().remaining, 0);
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_in_attempts_and_total_wait() {
    let sim = start_sim().await;
    let reg = Retrying::new(registry(&sim, repo(), token(TOKEN)), fast_policy());
    sim.inject(Fault::new(FaultKind::ServerError { status: 503 }, 100));
    let err = reg.observe().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(sim.stats().count(LIST), 4);
    sim.clear_faults();

    // A retry-after beyond the total budget is not waited out.
    let short = Retrying::new(
        registry(&sim, repo(), token(TOKEN)),
        RetryPolicy {
            max_total_wait: Duration::from_secs(10),
            ..fast_policy()
        },
    );
    sim.inject(Fault::new(
        FaultKind::RateLimited {
            retry_after_secs: 3600,
        },
        1,
    ));
    let t0 = Instant::now();
    let err = short.observe().await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::RateLimited { .. }));
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn latency_is_waited_out_in_paused_time() {
    let sim = start_sim().await;
    let reg = registry(&sim, repo(), token(TOKEN));
    sim.set_latency(Some(Latency {
        ms: 5_000,
        route: Some("actions/runners".into()),
    }));
    let t0 = Instant::now();
    reg.observe().await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(5));
}

/// Issue 18: 50 pages at 300 ms took 15 s a pass, one after another. Once
/// the first page says how many there are, the others go at once: 20
/// pages cost 2 latencies, not 20. The next pass asks for the pages the
/// list had last time together with the first: 1 latency, all 304s.
#[tokio::test(start_paused = true)]
async fn issue_18_runner_pages_are_fetched_concurrently() {
    let sim = start_sim().await;
    sim.add_runners("repos/ldmx/images", "other", 2_000, &labels(&["x"]))
        .unwrap();
    let reg = registry(&sim, repo(), token(TOKEN));
    sim.set_latency(Some(Latency {
        ms: 300,
        route: Some("actions/runners".into()),
    }));
    for (pass, latencies) in [(0, 2), (1, 1), (2, 1)] {
        let t0 = Instant::now();
        let runners = reg.observe().await.unwrap();
        let took = t0.elapsed();
        assert_eq!(runners.len(), 2_000);
        let mut ids: Vec<u64> = runners.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 2_000);
        assert!(
            took >= Duration::from_millis(latencies * 300)
                && took < Duration::from_millis((latencies + 1) * 300),
            "pass {pass}: {took:?}, expected {latencies} latencies"
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.count(LIST), 60);
    assert_eq!(stats.count_status(LIST, 304), 40);
}

/// The pages asked for at once are the ones the list had last time: a
/// list that shrank answers the pages past its end with no runners, one
/// that grew is asked for its new pages once the first page says so.
/// Either way every runner is seen once.
#[tokio::test(start_paused = true)]
async fn a_list_that_shrank_or_grew_since_last_time_is_read_whole() {
    let sim = start_sim().await;
    sim.add_runners("repos/ldmx/images", "a", 1_000, &labels(&["x"]))
        .unwrap();
    let reg = registry(&sim, repo(), token(TOKEN));
    let all = |runners: &[hangar::plan::model::ObservedRunner]| {
        let mut ids: Vec<u64> = runners.iter().map(|r| r.id).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "a runner seen twice");
        ids
    };
    let ids = all(&reg.observe().await.unwrap());
    assert_eq!(ids.len(), 1_000);
    // Shrink to 2.5 pages: pages 4-10 are asked once more and are empty.
    for id in &ids[250..] {
        assert_eq!(reg.remove(*id).await.unwrap(), RemoveOutcome::Removed);
    }
    assert_eq!(all(&reg.observe().await.unwrap()), ids[..250].to_vec());
    sim.reset_stats();
    // The next pass knows the list has 3 pages.
    assert_eq!(all(&reg.observe().await.unwrap()).len(), 250);
    assert_eq!(sim.stats().count(LIST), 3);
    // Grow past what was known: the new pages follow the first's count.
    sim.add_runners("repos/ldmx/images", "b", 1_500, &labels(&["x"]))
        .unwrap();
    sim.reset_stats();
    assert_eq!(all(&reg.observe().await.unwrap()).len(), 1_750);
    assert_eq!(sim.stats().count(LIST), 18);
}

#[tokio::test]
async fn a_slow_answer_times_out_as_transient() {
    let sim = start_sim().await;
    let reg = Retrying::new(
        GithubRegistry::new(GithubConfig {
            scope: repo(),
            api_url: sim.base_url.clone(),
            auth: token(TOKEN),
            timeout: Some(Duration::from_millis(150)),
        })
        .unwrap(),
        RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            max_total_wait: Duration::from_secs(1),
        },
    );
    sim.set_latency(Some(Latency {
        ms: 600,
        route: None,
    }));
    let err = reg.observe().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    sim.set_latency(None);
    assert!(reg.observe().await.unwrap().is_empty());
}

/// A mint that failed ambiguously is not sent again: the registration may
/// exist while the answer carrying its only config was lost. The action
/// fails, and the engine's next plan removes the registration as a runner
/// of ours without a VM (`tests/reliability` s02 covers the whole loop).
#[tokio::test(start_paused = true)]
async fn a_jit_mint_whose_answer_is_lost_is_not_sent_again() {
    let sim = start_sim().await;
    let reg = Retrying::new(registry(&sim, repo(), token(TOKEN)), fast_policy());
    // GitHub registers the runner, but the answer never arrives.
    sim.inject(
        Fault::new(FaultKind::ServerError { status: 502 }, 1)
            .on_route(JIT)
            .after_effect(),
    );
    let wanted = labels(&["hangar-ldmx", "UMN"]);
    let err = reg
        .jit_config("ldmx-umn-0", &wanted, "default")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert_eq!(sim.stats().count(JIT), 1, "not sent again");
    assert_eq!(sim.stats().count("DELETE"), 0, "nothing removed here");
    let world = sim.world();
    let names: Vec<_> = world
        .scopes
        .values()
        .flat_map(|s| s.runners.values().map(|r| r.name.clone()))
        .collect();
    assert_eq!(names, ["ldmx-umn-0"], "the registration GitHub made");

    // A rate-limited mint was not carried out: sent again.
    sim.reset_stats();
    sim.inject(
        Fault::new(
            FaultKind::RateLimited {
                retry_after_secs: 5,
            },
            1,
        )
        .on_route(JIT),
    );
    reg.jit_config("ldmx-umn-1", &wanted, "default")
        .await
        .unwrap();
    assert_eq!(sim.stats().count(JIT), 2);
    assert_eq!(sim.stats().count(LIST), 0);
}

/// Collects everything every tracing event writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_secret_reaches_a_log_line_an_error_or_debug_output() {
    // A global subscriber: a thread-scoped one misses events whose callsite
    // interest another test thread cached first. Other tests' events land
    // here too, which only widens what is checked.
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("only this test sets it");

    const CANARY_TOKEN: &str = "ghp_CANARYtoken0123456789";
    let mut config = SimConfig::new(CANARY_TOKEN);
    config.app = Some(SimApp {
        app_id: APP_ID,
        installation_id: INSTALLATION_ID,
        public_key_pem: TEST_APP_PUBLIC_KEY.into(),
    });
    let sim = sim::start(config).await.unwrap();
    let mut outputs: Vec<String> = Vec::new();

    // Token auth, repository scope, with faults so errors and retries log.
    let by_token = Retrying::new(registry(&sim, repo(), token(CANARY_TOKEN)), fast_policy());
    sim.inject(Fault::new(FaultKind::ServerError { status: 502 }, 1).on_route(LIST));
    let jit = by_token
        .jit_config("ldmx-umn-0", &labels(&["hangar-ldmx"]), "default")
        .await
        .unwrap();
    // An ambiguous mint fails (and logs) without being sent again.
    sim.inject(
        Fault::new(FaultKind::ServerError { status: 502 }, 1)
            .on_route(JIT)
            .after_effect(),
    );
    by_token
        .jit_config("ldmx-umn-2", &labels(&["hangar-ldmx"]), "default")
        .await
        .unwrap_err();
    let reg_token = by_token.registration_token().await.unwrap();
    by_token.observe().await.unwrap();
    outputs.push(format!("{jit:?} {reg_token:?} {reg_token}"));
    outputs.push(format!("{:?}", by_token.inner()));

    // App auth, organization scope.
    let by_app = registry(&sim, org(), app_auth(TEST_APP_KEY));
    let jit2 = by_app
        .jit_config("ldmx-umn-1", &labels(&["hangar-ldmx"]), "default")
        .await
        .unwrap();
    by_app.observe().await.unwrap();
    outputs.push(format!("{jit2:?} {:?}", app_auth(TEST_APP_KEY)));
    outputs.push(format!(
        "{:?}",
        GithubConfig::new(org(), token(CANARY_TOKEN))
    ));

    // Errors: a wrong key, a wrong token, a busy removal, a taken name.
    let wrong_key = registry(&sim, org(), app_auth(OTHER_KEY));
    let e = wrong_key.observe().await.unwrap_err();
    outputs.push(format!("{e} {e:?}"));
    let wrong = registry(&sim, repo(), token("ghp_CANARYwrong"));
    let e = wrong.observe().await.unwrap_err();
    outputs.push(format!("{e} {e:?}"));
    let e = by_token
        .jit_config("ldmx-umn-0", &labels(&["hangar-ldmx"]), "default")
        .await
        .unwrap_err();
    outputs.push(format!("{e} {e:?}"));
    // Installation and registration tokens the simulator issued.
    let sim_tokens: Vec<String> = sim.world().tokens.into_iter().map(|t| t.token).collect();
    assert!(sim_tokens.len() >= 2);
    sim.shutdown().await.unwrap();

    let world_tokens: Vec<String> = sim_tokens;
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("jit runner registered"),
        "capture works: {logs}"
    );
    assert!(logs.contains("retrying"), "faults were logged");
    let key_line = TEST_APP_KEY.lines().nth(5).unwrap();
    let mut canaries = vec![
        CANARY_TOKEN.to_string(),
        "ghp_CANARYwrong".to_string(),
        jit.config.expose().clone(),
        jit2.config.expose().clone(),
        reg_token.expose().clone(),
        key_line.to_string(),
    ];
    canaries.extend(world_tokens);
    for canary in &canaries {
        assert!(!logs.contains(canary.as_str()), "a secret is in the logs");
        for out in &outputs {
            assert!(!out.contains(canary.as_str()), "a secret is in {out}");
        }
    }
}

/// A 422 on runner delete means busy only when GitHub's message says the
/// runner is running a job; any other 422 ("Validation failed, or the
/// endpoint has been spammed") is a retryable failure.
#[tokio::test]
async fn a_422_on_delete_is_busy_only_when_it_says_so() {
    let sim = start_sim().await;
    let reg = registry(&sim, repo(), token(TOKEN));
    let ids = sim.add_runners("repos/ldmx/images", "r", 2, &[]).unwrap();
    sim.start_job(ids[0]).unwrap();
    assert_eq!(reg.remove(ids[0]).await.unwrap(), RemoveOutcome::Busy);
    sim.inject(Fault::new(FaultKind::ValidationFailed, 1).on_route("DELETE"));
    let err = reg.remove(ids[1]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err:?}");
    assert!(sim.runner(ids[1]).is_some());
    assert_eq!(reg.remove(ids[1]).await.unwrap(), RemoveOutcome::Removed);
}
