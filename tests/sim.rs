//! The simulator over raw HTTP: GitHub's shapes, status codes and headers,
//! the control API, and the state file.

use std::collections::HashMap;

use hangar::sim::{self, SimConfig, SimHandle};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "sim-raw-token";

struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
async fn http(
    sim: &SimHandle,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let addr = sim.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    // Lossy: a release asset's bytes are not text (its length is checked).
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

const AUTH: (&str, &str) = ("authorization", "Bearer sim-raw-token");

async fn start() -> SimHandle {
    sim::start(SimConfig::new(TOKEN)).await.unwrap()
}

#[tokio::test]
async fn authentication_is_checked_with_githubs_error_bodies() {
    let sim = start().await;
    let path = "/repos/o/r/actions/runners";
    let a = http(&sim, "GET", path, &[], None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["message"], "Requires authentication");
    assert!(a.json()["documentation_url"]
        .as_str()
        .unwrap()
        .starts_with("https://docs.github.com/"));
    let a = http(&sim, "GET", path, &[("authorization", "Bearer nope")], None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["message"], "Bad credentials");
    let a = http(
        &sim,
        "GET",
        path,
        &[("authorization", "token sim-raw-token")],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let a = http(&sim, "GET", path, &[AUTH], None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!({ "total_count": 0, "runners": [] }));
}

#[tokio::test]
async fn lists_paginate_with_link_headers_and_etags() {
    let sim = start().await;
    sim.add_runners("orgs/acme", "r", 5, &["gpu".to_string()])
        .unwrap();
    let a = http(
        &sim,
        "GET",
        "/orgs/acme/actions/runners?per_page=2",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["total_count"], 5);
    assert_eq!(v["runners"].as_array().unwrap().len(), 2);
    let r = &v["runners"][0];
    for field in [
        "id",
        "name",
        "os",
        "status",
        "busy",
        "labels",
        "runner_group_id",
    ] {
        assert!(r.get(field).is_some(), "{field} missing: {r}");
    }
    assert_eq!(r["status"], "online");
    assert_eq!(r["labels"][0]["type"], "read-only");
    assert!(r["labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "gpu" && l["type"] == "custom"));
    let link = a.header("link");
    assert!(link.contains("page=2>; rel=\"next\""), "{link}");
    assert!(link.contains("page=3>; rel=\"last\""), "{link}");
    assert!(!link.contains("rel=\"prev\""), "{link}");

    let a = http(
        &sim,
        "GET",
        "/orgs/acme/actions/runners?per_page=2&page=2",
        &[AUTH],
        None,
    )
    .await;
    let link = a.header("link").to_string();
    for rel in ["prev", "next", "last", "first"] {
        assert!(link.contains(&format!("rel=\"{rel}\"")), "{link}");
    }
    let a = http(
        &sim,
        "GET",
        "/orgs/acme/actions/runners?per_page=2&page=3",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(a.json()["runners"].as_array().unwrap().len(), 1);
    assert!(!a.header("link").contains("rel=\"next\""));

    // ETag: unchanged → 304 without body and without cost.
    let a = http(
        &sim,
        "GET",
        "/orgs/acme/actions/runners?per_page=100",
        &[AUTH],
        None,
    )
    .await;
    let etag = a.header("etag").to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    let remaining: u64 = a.header("x-ratelimit-remaining").parse().unwrap();
    let a = http(
        &sim,
        "GET",
        "/orgs/acme/actions/runners?per_page=100",
        &[AUTH, ("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(a.status, 304);
    assert!(a.body.is_empty());
    assert_eq!(
        a.header("x-ratelimit-remaining").parse::<u64>().unwrap(),
        remaining
    );
    // Changed → 200 with a new ETag.
    let id = sim.runner_by_name("orgs/acme", "r-0").unwrap().id;
    sim.set_online(id, false).unwrap();
    let a = http(
        &sim,
        "GET",
        "/orgs/acme/actions/runners?per_page=100",
        &[AUTH, ("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_ne!(a.header("etag"), etag);
    assert_eq!(sim.stats().not_modified, 1);
    assert_eq!(
        a.header("x-ratelimit-remaining").parse::<u64>().unwrap(),
        remaining - 1
    );
    // By name.
    let a = http(
        &sim,
        "GET",
        "/orgs/acme/actions/runners?name=r-3",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(a.json()["total_count"], 1);
}

#[tokio::test]
async fn runner_routes_answer_githubs_status_codes() {
    let sim = start().await;
    let base = "/repos/o/r/actions/runners";
    let body = json!({ "name": "n-0", "runner_group_id": 1, "labels": ["hangar-x"], "work_folder": "_work" });
    let a = http(
        &sim,
        "POST",
        &format!("{base}/generate-jitconfig"),
        &[AUTH],
        Some(body.clone()),
    )
    .await;
    assert_eq!(a.status, 201);
    let v = a.json();
    let id = v["runner"]["id"].as_u64().unwrap();
    assert_eq!(v["runner"]["status"], "offline");
    let encoded = v["encoded_jit_config"].as_str().unwrap();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let doc: Value = serde_json::from_slice(&decoded).unwrap();
    let runner_file = base64::engine::general_purpose::STANDARD
        .decode(doc[".runner"].as_str().unwrap())
        .unwrap();
    let runner_file: Value = serde_json::from_slice(&runner_file).unwrap();
    assert_eq!(runner_file["AgentName"], "n-0");

    let a = http(
        &sim,
        "POST",
        &format!("{base}/generate-jitconfig"),
        &[AUTH],
        Some(body),
    )
    .await;
    assert_eq!(a.status, 409);
    let a = http(
        &sim,
        "POST",
        &format!("{base}/generate-jitconfig"),
        &[AUTH],
        Some(json!({ "name": "n-1", "labels": ["a"] })),
    )
    .await;
    assert_eq!(a.status, 422);
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .contains("runner_group_id"));
    for labels in [json!([]), json!(["a,b"]), json!([""])] {
        let a = http(
            &sim,
            "POST",
            &format!("{base}/generate-jitconfig"),
            &[AUTH],
            Some(json!({ "name": "n-1", "runner_group_id": 1, "labels": labels })),
        )
        .await;
        assert_eq!(a.status, 422, "{labels}");
    }
    let a = http(
        &sim,
        "POST",
        &format!("{base}/generate-jitconfig"),
        &[AUTH],
        Some(json!({ "name": "n-1", "runner_group_id": 9, "labels": ["a"] })),
    )
    .await;
    assert_eq!(a.status, 404);

    let a = http(&sim, "GET", &format!("{base}/{id}"), &[AUTH], None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["name"], "n-0");
    let a = http(&sim, "GET", &format!("{base}/999999"), &[AUTH], None).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["message"], "Not Found");

    // Labels.
    let a = http(
        &sim,
        "POST",
        &format!("{base}/{id}/labels"),
        &[AUTH],
        Some(json!({ "labels": ["extra"] })),
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(a.json()["labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "extra"));
    let a = http(
        &sim,
        "DELETE",
        &format!("{base}/{id}/labels/extra"),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let a = http(
        &sim,
        "DELETE",
        &format!("{base}/{id}/labels/extra"),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(a.status, 404);

    // Tokens.
    for route in ["registration-token", "remove-token"] {
        let a = http(&sim, "POST", &format!("{base}/{route}"), &[AUTH], None).await;
        assert_eq!(a.status, 201);
        let v = a.json();
        assert!(v["token"].as_str().unwrap().len() >= 20);
        chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).unwrap();
    }

    // Delete: busy → 422, then 204, then 404.
    sim.run_jit(encoded).unwrap();
    sim.start_job(id).unwrap();
    let a = http(&sim, "DELETE", &format!("{base}/{id}"), &[AUTH], None).await;
    assert_eq!(a.status, 422);
    let mut sim_runner = sim.runner(id).unwrap();
    assert!(sim_runner.busy);
    sim.set_online(id, false).unwrap();
    sim_runner = sim.runner(id).unwrap();
    assert!(!sim_runner.busy);
    let a = http(&sim, "DELETE", &format!("{base}/{id}"), &[AUTH], None).await;
    assert_eq!(a.status, 204);
    let a = http(&sim, "DELETE", &format!("{base}/{id}"), &[AUTH], None).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn groups_rate_limit_and_headers() {
    let sim = start().await;
    sim.add_runner_group("acme", "GPU").unwrap();
    let a = http(
        &sim,
        "GET",
        "/orgs/acme/actions/runner-groups",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["total_count"], 2);
    assert_eq!(v["runner_groups"][0]["id"], 1);
    assert_eq!(v["runner_groups"][0]["default"], true);
    assert_eq!(v["runner_groups"][1]["name"], "GPU");
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
        "x-ratelimit-resource",
    ] {
        assert!(!a.header(h).is_empty(), "{h}");
    }
    let a = http(&sim, "GET", "/rate_limit", &[AUTH], None).await;
    let v = a.json();
    assert_eq!(v["resources"]["core"]["limit"], 5000);
    assert_eq!(v["rate"]["remaining"], v["resources"]["core"]["remaining"]);
    let before = v["rate"]["remaining"].as_u64().unwrap();
    let a = http(&sim, "GET", "/rate_limit", &[AUTH], None).await;
    assert_eq!(
        a.json()["rate"]["remaining"].as_u64().unwrap(),
        before,
        "free"
    );

    // Exhausted budget: 403 with remaining 0.
    sim.set_rate_remaining(0);
    let a = http(&sim, "GET", "/orgs/acme/actions/runners", &[AUTH], None).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.header("x-ratelimit-remaining"), "0");
}

#[tokio::test]
async fn the_control_api_plays_the_vm_and_injects_faults() {
    let sim = start().await;
    let a = http(
        &sim,
        "POST",
        "/_sim/registration-token",
        &[],
        Some(json!({ "scope": "repos/o/r" })),
    )
    .await;
    assert_eq!(a.status, 201);
    let token = a.json()["token"].as_str().unwrap().to_string();
    let reg = json!({ "scope": "repos/o/r", "name": "p-0", "labels": ["x"], "token": "wrong" });
    let a = http(&sim, "POST", "/_sim/runners", &[], Some(reg)).await;
    assert_eq!(a.status, 401);
    let reg = json!({ "scope": "repos/o/r", "name": "p-0", "labels": ["x"], "token": token });
    let a = http(&sim, "POST", "/_sim/runners", &[], Some(reg)).await;
    assert_eq!(a.status, 201);
    let id = a.json()["id"].as_u64().unwrap();
    for (step, status) in [
        ("online", 200),
        ("job/start", 200),
        ("job/start", 409),
        ("job/finish", 200),
        ("offline", 200),
        ("job/start", 422),
    ] {
        let a = http(
            &sim,
            "POST",
            &format!("/_sim/runners/{id}/{step}"),
            &[],
            None,
        )
        .await;
        assert_eq!(a.status, status, "{step}");
    }
    let a = http(
        &sim,
        "POST",
        "/_sim/jit/run",
        &[],
        Some(json!({ "encoded_jit_config": "bm9wZQ==" })),
    )
    .await;
    assert_eq!(a.status, 401);

    let fault =
        json!({ "kind": "server_error", "status": 503, "count": 2, "route": "actions/runners" });
    assert_eq!(
        http(&sim, "POST", "/_sim/faults", &[], Some(fault))
            .await
            .status,
        204
    );
    let fault = json!({ "kind": "rate_limited", "retry_after_secs": 9, "count": 1 });
    assert_eq!(
        http(&sim, "POST", "/_sim/faults", &[], Some(fault))
            .await
            .status,
        204
    );
    let path = "/repos/o/r/actions/runners";
    assert_eq!(http(&sim, "GET", path, &[AUTH], None).await.status, 503);
    assert_eq!(http(&sim, "GET", path, &[AUTH], None).await.status, 503);
    let a = http(&sim, "GET", path, &[AUTH], None).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("retry-after"), "9");
    let fault = json!({ "kind": "secondary_limit", "retry_after_secs": null, "count": 1 });
    http(&sim, "POST", "/_sim/faults", &[], Some(fault)).await;
    let a = http(&sim, "GET", path, &[AUTH], None).await;
    assert_eq!(a.status, 403);
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .contains("secondary rate limit"));
    assert_eq!(http(&sim, "GET", path, &[AUTH], None).await.status, 200);

    let a = http(&sim, "GET", "/_sim/stats", &[], None).await;
    let stats = a.json();
    let route = "GET /repos/{owner}/{repo}/actions/runners";
    assert_eq!(stats["by_route"][route], 5);
    assert_eq!(stats["by_status"]["503"], 2);
    assert_eq!(stats["by_route_status"][route]["429"], 1);
    let a = http(&sim, "GET", "/_sim/state", &[], None).await;
    assert!(a.json()["scopes"]["repos/o/r"]["runners"][id.to_string()].is_object());
    assert_eq!(
        http(&sim, "DELETE", "/_sim/stats", &[], None).await.status,
        204
    );
    assert_eq!(sim.stats().total, 0);
}

#[tokio::test]
async fn the_state_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sim.json");
    let mut config = SimConfig::new(TOKEN);
    config.state_file = Some(file.clone());
    let sim = sim::start(config.clone()).await.unwrap();
    let ids = sim.add_runners("orgs/acme", "keep", 2, &[]).unwrap();
    sim.add_runner_group("acme", "GPU").unwrap();
    sim.shutdown().await.unwrap();
    assert!(file.exists());

    let again = sim::start(config).await.unwrap();
    assert_eq!(again.runner(ids[1]).unwrap().name, "keep-1");
    let a = http(&again, "GET", "/orgs/acme/actions/runners", &[AUTH], None).await;
    assert_eq!(a.json()["total_count"], 2);
    // New ids do not collide with loaded ones.
    let more = again.add_runners("orgs/acme", "new", 1, &[]).unwrap();
    assert!(more[0] > ids[1]);

    std::fs::write(&file, "not json").unwrap();
    let mut broken = SimConfig::new(TOKEN);
    broken.state_file = Some(file);
    assert!(sim::start(broken).await.is_err());
}

#[tokio::test]
async fn serve_answers_on_a_given_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(sim::serve(listener, SimConfig::new(TOKEN)));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /rate_limit HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: token sim-raw-token\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    task.abort();
}

#[tokio::test]
async fn runner_releases_are_served_in_githubs_shape_with_etags() {
    let sim = start().await;
    // The seed: a release of actions/runner, so `latest` resolves offline.
    let latest = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases/latest",
        &[],
        None,
    )
    .await;
    assert_eq!(latest.status, 200, "{}", latest.body);
    let r = latest.json();
    let seed = sim::SEED_RUNNER_VERSION;
    assert_eq!(r["tag_name"], format!("v{seed}"));
    assert_eq!(r["draft"], false);
    assert_eq!(r["author"]["type"], "Bot");
    let assets = r["assets"].as_array().unwrap();
    let names: Vec<&str> = assets.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["x64", "arm64", "arm"].map(|a| format!("actions-runner-linux-{a}-{seed}.tar.gz"))
    );
    let x64 = &assets[0];
    let digest = x64["digest"].as_str().unwrap();
    let expected = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(sim::fake_runner_tarball(seed, "x64")))
    };
    assert_eq!(digest, format!("sha256:{expected}"));
    assert_eq!(
        x64["size"].as_u64().unwrap(),
        sim::fake_runner_tarball(seed, "x64").len() as u64
    );

    // The asset's bytes at its browser_download_url, free of rate limit.
    let url = x64["browser_download_url"].as_str().unwrap();
    let path = url.strip_prefix(&sim.base_url).unwrap();
    let before = sim.rate().remaining;
    let dl = http(&sim, "GET", path, &[], None).await;
    assert_eq!(dl.status, 200);
    assert_eq!(dl.header("content-length"), x64["size"].to_string());
    assert_eq!(sim.rate().remaining, before);

    // ETag and a free 304.
    let etag = latest.header("etag").to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    let again = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases/latest",
        &[("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // A new release appears through the control API.
    let published = http(
        &sim,
        "POST",
        "/_sim/releases",
        &[],
        Some(json!({ "version": "2.331.0", "published_at": "2030-01-02T03:04:05Z", "arches": ["x64"] })),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.body);
    let changed = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases/latest",
        &[("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["tag_name"], "v2.331.0");
    assert_eq!(changed.json()["published_at"], "2030-01-02T03:04:05Z");

    // A prerelease is listed but is not `latest`; a given tarball is served as given.
    let body = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"not a tarball");
    let pre = http(
        &sim,
        "POST",
        "/_sim/releases",
        &[],
        Some(json!({ "version": "2.332.0", "prerelease": true, "arches": ["arm64"], "tarball_base64": body,
                     "published_at": "2030-02-01T00:00:00Z" })),
    )
    .await;
    assert_eq!(pre.status, 201);
    assert_eq!(pre.json()["assets"][0]["size"], 13);
    let latest = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases/latest",
        &[],
        None,
    )
    .await;
    assert_eq!(latest.json()["tag_name"], "v2.331.0");

    // The list: newest first, paged with Link.
    let page = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases?per_page=2",
        &[],
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    let tags: Vec<String> = page
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tag_name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tags, ["v2.332.0", "v2.331.0"]);
    assert!(
        page.header("link").contains("page=2>; rel=\"next\""),
        "{}",
        page.header("link")
    );
    let page2 = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases?per_page=2&page=2",
        &[],
        None,
    )
    .await;
    assert_eq!(page2.json()[0]["tag_name"], format!("v{seed}"));

    // By tag; unknown tags and repositories are GitHub's 404.
    let tag = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases/tags/v2.331.0",
        &[],
        None,
    )
    .await;
    assert_eq!(
        tag.json()["assets"][0]["name"],
        "actions-runner-linux-x64-2.331.0.tar.gz"
    );
    let missing = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases/tags/v9.9.9",
        &[],
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "Not Found");
    let none = http(&sim, "GET", "/repos/o/r/releases/latest", &[], None).await;
    assert_eq!(none.status, 404);

    // Public, but a bad credential is still refused.
    let bad = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases/latest",
        &[("authorization", "Bearer nope")],
        None,
    )
    .await;
    assert_eq!(bad.status, 401);

    // Refused input on the control route.
    let refused = http(
        &sim,
        "POST",
        "/_sim/releases",
        &[],
        Some(json!({ "version": "two" })),
    )
    .await;
    assert_eq!(refused.status, 422);
}

#[tokio::test]
async fn the_seed_release_can_be_left_out() {
    let mut config = SimConfig::new(TOKEN);
    config.seed_runner_release = false;
    let sim = sim::start(config).await.unwrap();
    let latest = http(
        &sim,
        "GET",
        "/repos/actions/runner/releases/latest",
        &[],
        None,
    )
    .await;
    assert_eq!(latest.status, 404);
}
