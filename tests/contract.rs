//! The simulator held to GitHub's published contract: every route it
//! serves is exercised (by hangar's own clients and by raw requests for the
//! routes hangar does not call), every exchange is recorded at the
//! simulator, and each one is checked against GitHub's OpenAPI description
//! (`@octokit/openapi`, fetched by `.ci/fetch-openapi`): the answer's status
//! is one the operation declares (or one GitHub documents for every route),
//! its JSON body validates against the declared schema, and the request's
//! query parameters and JSON body are ones the operation takes. A deviation
//! fails the test, naming the operation and the first bad field.
//!
//! Without the description the test says so and passes, unless
//! `HANGAR_REQUIRE_OPENAPI=1`.

use std::path::PathBuf;

use chrono::Utc;
use hangar::model::runner::RunnerChoice;
use hangar::providers::github::{Auth, GithubConfig, GithubRegistry, Scope};
use hangar::providers::RunnerRegistry;
use hangar::runner_dist::RunnerSupply;
use hangar::secret::Secret;
use hangar::sim::{self, Exchange, RegisterRunner, SimApp, SimConfig, SimHandle};
use serde_json::{json, Value};

const VERSION: &str = "23.0.2";
const TOKEN: &str = "contract-token";
const APP_ID: u64 = 4242;
const INSTALLATION_ID: u64 = 77;

/// Statuses GitHub documents for every route (conditional requests,
/// authentication, permissions, missing resources, validation, rate limits,
/// server errors).
fn documented_everywhere(status: u16) -> bool {
    matches!(status, 304 | 401 | 403 | 404 | 422 | 429) || status >= 500
}

fn spec_path() -> PathBuf {
    std::env::var_os("HANGAR_OPENAPI_SPEC")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(format!(
                "/var/cache/hangar-ci/octokit-openapi/{VERSION}/api.github.com.json"
            ))
        })
}

/// JSON-schema checks for the subset of OpenAPI 3.0 GitHub's description
/// uses: `$ref`, `type` (with `nullable`), `properties`/`required`,
/// `additionalProperties: false`, `items`, `enum`, `allOf`/`anyOf`/`oneOf`.
/// The error is the path of the first bad field and why.
struct Spec(Value);

impl Spec {
    fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let mut at = &self.0;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            s = at;
        }
        s
    }

    fn check(&self, schema: &Value, v: &Value, path: &str) -> Result<(), String> {
        let s = self.resolve(schema);
        if v.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, v, path)?;
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(any) = s.get(key).and_then(Value::as_array) {
                let errors: Vec<String> = any
                    .iter()
                    .filter_map(|sub| self.check(sub, v, path).err())
                    .collect();
                if errors.len() == any.len() {
                    return Err(format!("{path}: matches none of {key}: {}", errors[0]));
                }
            }
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            if !values.contains(v) && !v.is_null() {
                return Err(format!("{path}: {v} is not one of {values:?}"));
            }
        }
        let ty = s.get("type").and_then(Value::as_str);
        let ok = match ty {
            None => true,
            Some("object") => v.is_object(),
            Some("array") => v.is_array(),
            Some("string") => v.is_string(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("number") => v.is_number(),
            Some("boolean") => v.is_boolean(),
            Some("null") => v.is_null(),
            Some(_) => true,
        };
        if !ok {
            return Err(format!("{path}: {v} is not of type {}", ty.unwrap_or("?")));
        }
        if let Some(obj) = v.as_object() {
            let props = s.get("properties").and_then(Value::as_object);
            for req in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = req.as_str().unwrap_or_default();
                if !obj.contains_key(name) {
                    return Err(format!("{path}.{name}: required, missing"));
                }
            }
            for (k, val) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => self.check(sub, val, &format!("{path}.{k}"))?,
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return Err(format!("{path}.{k}: not a property the schema allows"))
                        }
                        Some(extra @ Value::Object(_)) => {
                            self.check(extra, val, &format!("{path}.{k}"))?
                        }
                        _ => {}
                    },
                }
            }
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, item) in arr.iter().enumerate() {
                self.check(items, item, &format!("{path}[{i}]"))?;
            }
        }
        Ok(())
    }

    /// The operation of a recorded exchange (the simulator's route
    /// templates use GitHub's path parameter names).
    fn operation(&self, e: &Exchange) -> Option<&Value> {
        self.0["paths"]
            .get(&e.template)?
            .get(e.method.to_lowercase())
    }

    /// Every problem of one exchange, at most one line each.
    fn judge(&self, e: &Exchange) -> Result<(), String> {
        let Some(op) = self.operation(e) else {
            return Err("no such operation in GitHub's description".into());
        };
        // The request: query parameters the operation declares, a body
        // valid against its request schema.
        let declared: Vec<String> = op
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| self.resolve(p))
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        for pair in e.query.split('&').filter(|p| !p.is_empty()) {
            let name = pair.split('=').next().unwrap_or_default();
            if !declared.iter().any(|d| d == name) {
                return Err(format!("request: query parameter `{name}` is not declared"));
            }
        }
        if !e.request_body.trim().is_empty() {
            let body: Value = serde_json::from_str(&e.request_body)
                .map_err(|err| format!("request: body is not JSON: {err}"))?;
            let schema = op
                .pointer("/requestBody/content/application~1json/schema")
                .ok_or("request: a body, but the operation takes none")?;
            self.check(schema, &body, "request")?;
        }
        // The answer.
        let status = e.status.to_string();
        let declared = op["responses"].get(&status).map(|r| self.resolve(r));
        if declared.is_none() && !documented_everywhere(e.status) {
            return Err(format!("answer: status {status} is not declared"));
        }
        if let Some(schema) = declared.and_then(|r| r.pointer("/content/application~1json/schema"))
        {
            let body: Value = serde_json::from_str(&e.response_body)
                .map_err(|err| format!("answer: body is not JSON: {err}"))?;
            self.check(schema, &body, "answer")?;
        }
        Ok(())
    }
}

#[path = "support/raw_http.rs"]
mod raw_http;

/// A raw request, for routes hangar itself does not call.
async fn raw(sim: &SimHandle, method: &str, path: &str, auth: &str, body: Option<Value>) -> u16 {
    let headers: Vec<(&str, &str)> = if auth.is_empty() {
        Vec::new()
    } else {
        vec![("authorization", auth)]
    };
    raw_http::http(sim, method, path, &headers, body)
        .await
        .status
}

fn app_jwt() -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let now = Utc::now().timestamp();
    let key =
        EncodingKey::from_rsa_pem(include_str!("fixtures/github-app/private-key.pem").as_bytes())
            .unwrap();
    let claims = json!({ "iat": now - 30, "exp": now + 500, "iss": APP_ID.to_string() });
    format!(
        "Bearer {}",
        encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
    )
}

/// Drive every route the simulator serves.
async fn exercise(sim: &SimHandle) {
    let bearer = format!("Bearer {TOKEN}");
    let auth = bearer.as_str();
    let dir = tempfile::tempdir().unwrap();
    // hangar's clients: both scopes, token and App; releases and tarballs.
    let scopes = [
        Scope::Repository {
            owner: "acme".into(),
            repo: "widgets".into(),
        },
        Scope::Organization { org: "acme".into() },
    ];
    for (i, scope) in scopes.into_iter().enumerate() {
        let auth = if i == 0 {
            Auth::Token(Secret::new(TOKEN.to_string()))
        } else {
            Auth::App {
                app_id: APP_ID,
                installation_id: INSTALLATION_ID,
                private_key_pem: Secret::new(
                    include_str!("fixtures/github-app/private-key.pem").to_string(),
                ),
            }
        };
        let reg = GithubRegistry::new(GithubConfig {
            scope,
            api_url: sim.base_url.clone(),
            auth,
            timeout: None,
        })
        .unwrap();
        let jit = reg
            .jit_config("c-pool-0", &["self-hosted".into(), "x".into()], "Default")
            .await
            .unwrap();
        reg.observe().await.unwrap();
        reg.observe().await.unwrap(); // the 304
        reg.registration_token().await.unwrap();
        sim.run_jit(jit.config.expose()).unwrap();
        sim.start_job(jit.runner_id).unwrap();
        reg.remove(jit.runner_id).await.unwrap(); // 422 busy
        sim.finish_job(jit.runner_id).unwrap();
        reg.remove(jit.runner_id).await.unwrap(); // 404 gone
    }
    let supply = RunnerSupply::new(&sim.base_url, dir.path(), None).unwrap();
    supply
        .tarball(&RunnerChoice::Latest, "x64", Utc::now())
        .await
        .unwrap();
    let pinned = RunnerChoice::Pinned {
        version: hangar::model::runner::RunnerVersion(2, 329, 1),
        sha256: None,
    };
    supply
        .releases
        .resolve(&pinned, "x64", Utc::now())
        .await
        .unwrap_err(); // releases/tags/v2.329.1: 404

    // Raw requests for the rest.
    let id = sim
        .register_runner(&RegisterRunner {
            scope: "orgs/acme".into(),
            name: "persistent".into(),
            labels: vec!["gpu".into()],
            token: sim.registration_token("orgs/acme").unwrap(),
            group: None,
            replace: false,
            ephemeral: false,
            no_default_labels: false,
        })
        .unwrap()
        .id;
    for scope in ["/repos/acme/widgets", "/orgs/acme"] {
        raw(
            sim,
            "GET",
            &format!("{scope}/actions/runners?per_page=1&page=1"),
            auth,
            None,
        )
        .await;
        raw(
            sim,
            "GET",
            &format!("{scope}/actions/runners/downloads"),
            auth,
            None,
        )
        .await;
        raw(
            sim,
            "POST",
            &format!("{scope}/actions/runners/remove-token"),
            auth,
            None,
        )
        .await;
        raw(
            sim,
            "GET",
            &format!("{scope}/actions/runners/999999"),
            auth,
            None,
        )
        .await;
    }
    let runner = format!("/orgs/acme/actions/runners/{id}");
    raw(sim, "GET", &runner, auth, None).await;
    let labels = format!("{runner}/labels");
    raw(sim, "GET", &labels, auth, None).await;
    raw(
        sim,
        "POST",
        &labels,
        auth,
        Some(json!({ "labels": ["a", "b"] })),
    )
    .await;
    raw(sim, "PUT", &labels, auth, Some(json!({ "labels": ["c"] }))).await;
    raw(sim, "DELETE", &format!("{labels}/c"), auth, None).await;
    raw(sim, "DELETE", &labels, auth, None).await;
    raw(sim, "DELETE", &runner, auth, None).await;
    raw(sim, "GET", "/orgs/acme/actions/runner-groups", auth, None).await;
    let widgets = hangar::sim::repo_id("acme/widgets");
    let created = raw_http::http(
        sim,
        "POST",
        "/orgs/acme/actions/runner-groups",
        &[("authorization", auth)],
        Some(json!({ "name": "gpu", "visibility": "selected",
                     "selected_repository_ids": [widgets], "runners": [id] })),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let group = format!("/orgs/acme/actions/runner-groups/{}", created.json()["id"]);
    raw(sim, "GET", &group, auth, None).await;
    raw(
        sim,
        "PATCH",
        &group,
        auth,
        Some(json!({ "allows_public_repositories": false, "name": "gpus" })),
    )
    .await;
    raw(sim, "GET", &format!("{group}/runners"), auth, None).await;
    let repos = raw_http::http(
        sim,
        "GET",
        &format!("{group}/repositories"),
        &[("authorization", auth)],
        None,
    )
    .await;
    assert_eq!(repos.json()["total_count"], 1, "{}", repos.body);
    raw(
        sim,
        "GET",
        "/orgs/acme/actions/runner-groups/999",
        auth,
        None,
    )
    .await;
    raw(sim, "GET", "/rate_limit", auth, None).await;
    raw(sim, "GET", "/rate_limit", "", None).await;
    let jwt = app_jwt();
    raw(sim, "GET", "/app", &jwt, None).await;
    raw(
        sim,
        "GET",
        &format!("/app/installations/{INSTALLATION_ID}"),
        &jwt,
        None,
    )
    .await;
    raw(sim, "GET", "/app/installations/1", &jwt, None).await;
    raw(sim, "GET", "/repos/acme/widgets/installation", &jwt, None).await;
    raw(sim, "GET", "/orgs/acme/installation", &jwt, None).await;
    raw(sim, "GET", "/orgs/acme/installation", auth, None).await;
    raw(
        sim,
        "GET",
        "/repos/actions/runner/releases?per_page=2",
        "",
        None,
    )
    .await;
    raw(
        sim,
        "GET",
        "/repos/actions/runner/releases/latest",
        "",
        None,
    )
    .await;
    let tag = format!(
        "/repos/actions/runner/releases/tags/v{}",
        sim::SEED_RUNNER_VERSION
    );
    raw(sim, "GET", &tag, "", None).await;
    raw(
        sim,
        "GET",
        "/repos/acme/widgets/releases/latest",
        auth,
        None,
    )
    .await;
    raw(
        sim,
        "POST",
        "/repos/acme/widgets/actions/runners/generate-jitconfig",
        auth,
        Some(json!({ "name": "bad", "runner_group_id": 1, "labels": [] })),
    )
    .await;

    // Workflow runs and jobs: a queued run, one in progress (its job
    // taken by a matching runner), one completed; the 304 of an unchanged
    // list.
    let queued = sim
        .enqueue_job(&sim::EnqueueJob::new("acme/widgets", &["no-such-label"]))
        .unwrap();
    sim.add_runners("repos/acme/widgets", "taker", 1, &["gpu".into()])
        .unwrap();
    let taken = sim
        .enqueue_job(&sim::EnqueueJob::new(
            "acme/widgets",
            &["self-hosted", "gpu"],
        ))
        .unwrap();
    assert_eq!(taken.status, sim::JobStatus::InProgress);
    let done = sim
        .enqueue_job(&sim::EnqueueJob::new("acme/widgets", &["self-hosted"]))
        .unwrap();
    sim.end_job(done.id).unwrap();
    let runs = "/repos/acme/widgets/actions/runs";
    let first = raw_http::http(
        sim,
        "GET",
        &format!("{runs}?status=queued&per_page=1"),
        &[("authorization", auth)],
        None,
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = raw_http::http(
        sim,
        "GET",
        &format!("{runs}?status=queued&per_page=1"),
        &[
            ("authorization", auth),
            ("if-none-match", first.header("etag")),
        ],
        None,
    )
    .await;
    assert_eq!(again.status, 304);
    raw(sim, "GET", runs, auth, None).await;
    raw(
        sim,
        "GET",
        &format!("{runs}?status=in_progress&page=2"),
        auth,
        None,
    )
    .await;
    for job in [&queued, &taken, &done] {
        raw(
            sim,
            "GET",
            &format!("{runs}/{}/jobs?filter=latest", job.run_id),
            auth,
            None,
        )
        .await;
    }
    raw(sim, "GET", &format!("{runs}/1/jobs"), auth, None).await;
}

#[tokio::test]
async fn every_route_the_simulator_serves_keeps_githubs_contract() {
    let path = spec_path();
    let Ok(text) = std::fs::read_to_string(&path) else {
        if std::env::var("HANGAR_REQUIRE_OPENAPI").as_deref() == Ok("1") {
            panic!(
                "{}: GitHub's OpenAPI description is absent; run .ci/fetch-openapi",
                path.display()
            );
        }
        eprintln!(
            "skipped: {} is absent (run .ci/fetch-openapi; HANGAR_REQUIRE_OPENAPI=1 makes this a failure)",
            path.display()
        );
        return;
    };
    let spec = Spec(serde_json::from_str(&text).expect("the description is JSON"));

    let mut config = SimConfig::new(TOKEN);
    config.record_exchanges = true;
    config.app = Some(SimApp {
        app_id: APP_ID,
        installation_id: INSTALLATION_ID,
        public_key_pem: include_str!("fixtures/github-app/public-key.pem").into(),
    });
    let sim = sim::start(config).await.unwrap();
    exercise(&sim).await;

    let exchanges = sim.exchanges();
    let mut bad = Vec::new();
    let mut routes = std::collections::BTreeSet::new();
    for e in &exchanges {
        // A release asset's bytes come from github.com, not the API.
        if e.template.contains("/releases/download/") {
            continue;
        }
        routes.insert(format!("{} {}", e.method, e.template));
        if let Err(why) = spec.judge(e) {
            bad.push(format!(
                "{} {} ({} {}?{}) -> {}: {why}",
                e.method, e.template, e.method, e.path, e.query, e.status
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "deviations from GitHub's description:\n{}",
        bad.join("\n")
    );
    // Every route family the simulator serves was exercised: runners,
    // labels, tokens, JIT, groups, downloads, rate limit, App, releases.
    assert!(
        routes.len() >= 31,
        "{} routes exercised: {routes:#?}",
        routes.len()
    );

    // The checker is live against the real description: the /rate_limit
    // answer the simulator gave before issue 19 (no `resources.search`) and
    // a JIT request without labels are deviations, named by field.
    let core = json!({ "limit": 1, "remaining": 1, "reset": 1, "used": 0 });
    let old = Exchange {
        method: "GET".into(),
        template: "/rate_limit".into(),
        path: "/rate_limit".into(),
        query: String::new(),
        request_body: String::new(),
        status: 200,
        response_body: json!({ "resources": { "core": core }, "rate": core }).to_string(),
    };
    assert_eq!(
        spec.judge(&old).unwrap_err(),
        "answer.resources.search: required, missing"
    );
    let jit = Exchange {
        method: "POST".into(),
        template: "/repos/{owner}/{repo}/actions/runners/generate-jitconfig".into(),
        request_body: json!({ "name": "x", "runner_group_id": 1 }).to_string(),
        status: 201,
        response_body: "{}".into(),
        ..old.clone()
    };
    assert_eq!(
        spec.judge(&jit).unwrap_err(),
        "request.labels: required, missing"
    );
    let query = Exchange {
        query: "per_page=1&bogus=2".into(),
        template: "/repos/{owner}/{repo}/actions/runners".into(),
        status: 304,
        ..old
    };
    assert!(spec.judge(&query).unwrap_err().contains("`bogus`"));
}

#[test]
fn the_checker_finds_a_bad_field() {
    let spec = Spec(json!({
        "components": { "schemas": { "r": {
            "type": "object", "required": ["id"],
            "properties": { "id": { "type": "integer" }, "n": { "type": "string", "nullable": true } }
        } } }
    }));
    let schema = json!({ "$ref": "#/components/schemas/r" });
    assert!(spec
        .check(&schema, &json!({ "id": 1, "n": null }), "a")
        .is_ok());
    assert_eq!(
        spec.check(&schema, &json!({ "n": "x" }), "a").unwrap_err(),
        "a.id: required, missing"
    );
    assert!(spec
        .check(&schema, &json!({ "id": "1" }), "a")
        .unwrap_err()
        .starts_with("a.id:"));
}
