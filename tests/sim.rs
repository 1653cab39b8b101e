//! The simulator over raw HTTP: GitHub's shapes, status codes and headers,
//! the control API, and the state file.

use hangar::sim::{self, SimConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "support/raw_http.rs"]
mod raw_http;

use raw_http::{delete, get, http, post, start, AUTH, TOKEN};

#[tokio::test]
async fn authentication_is_checked_with_githubs_error_bodies() {
    let sim = start().await;
    let path = "/repos/o/r/actions/runners";
    let a = get(&sim, path, &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["message"], "Requires authentication");
    assert!(a.json()["documentation_url"]
        .as_str()
        .unwrap()
        .starts_with("https://docs.github.com/"));
    let a = get(&sim, path, &[("authorization", "Bearer nope")]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["message"], "Bad credentials");
    let a = get(&sim, path, &[("authorization", "token sim-raw-token")]).await;
    assert_eq!(a.status, 200);
    let a = get(&sim, path, &[AUTH]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), json!({ "total_count": 0, "runners": [] }));
}

#[tokio::test]
async fn lists_paginate_with_link_headers_and_etags() {
    let sim = start().await;
    sim.add_runners("orgs/acme", "r", 5, &["gpu".to_string()])
        .unwrap();
    let a = get(&sim, "/orgs/acme/actions/runners?per_page=2", &[AUTH]).await;
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

    let a = get(
        &sim,
        "/orgs/acme/actions/runners?per_page=2&page=2",
        &[AUTH],
    )
    .await;
    let link = a.header("link").to_string();
    for rel in ["prev", "next", "last", "first"] {
        assert!(link.contains(&format!("rel=\"{rel}\"")), "{link}");
    }
    let a = get(
        &sim,
        "/orgs/acme/actions/runners?per_page=2&page=3",
        &[AUTH],
    )
    .await;
    assert_eq!(a.json()["runners"].as_array().unwrap().len(), 1);
    assert!(!a.header("link").contains("rel=\"next\""));

    // ETag: unchanged → 304 without body and without cost.
    let a = get(&sim, "/orgs/acme/actions/runners?per_page=100", &[AUTH]).await;
    let etag = a.header("etag").to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    let remaining: u64 = a.header("x-ratelimit-remaining").parse().unwrap();
    let a = get(
        &sim,
        "/orgs/acme/actions/runners?per_page=100",
        &[AUTH, ("if-none-match", &etag)],
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
    let a = get(
        &sim,
        "/orgs/acme/actions/runners?per_page=100",
        &[AUTH, ("if-none-match", &etag)],
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
    let a = get(&sim, "/orgs/acme/actions/runners?name=r-3", &[AUTH]).await;
    assert_eq!(a.json()["total_count"], 1);
}

#[tokio::test]
async fn runner_routes_answer_githubs_status_codes() {
    let sim = start().await;
    let base = "/repos/o/r/actions/runners";
    let body = json!({ "name": "n-0", "runner_group_id": 1, "labels": ["hangar-x"], "work_folder": "_work" });
    let a = post(
        &sim,
        &format!("{base}/generate-jitconfig"),
        &[AUTH],
        body.clone(),
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

    let a = post(&sim, &format!("{base}/generate-jitconfig"), &[AUTH], body).await;
    assert_eq!(a.status, 409);
    let a = post(
        &sim,
        &format!("{base}/generate-jitconfig"),
        &[AUTH],
        json!({ "name": "n-1", "labels": ["a"] }),
    )
    .await;
    assert_eq!(a.status, 422);
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .contains("runner_group_id"));
    for labels in [json!([]), json!(["a,b"]), json!([""])] {
        let a = post(
            &sim,
            &format!("{base}/generate-jitconfig"),
            &[AUTH],
            json!({ "name": "n-1", "runner_group_id": 1, "labels": labels }),
        )
        .await;
        assert_eq!(a.status, 422, "{labels}");
    }
    let a = post(
        &sim,
        &format!("{base}/generate-jitconfig"),
        &[AUTH],
        json!({ "name": "n-1", "runner_group_id": 9, "labels": ["a"] }),
    )
    .await;
    assert_eq!(a.status, 404);

    let a = get(&sim, &format!("{base}/{id}"), &[AUTH]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["name"], "n-0");
    let a = get(&sim, &format!("{base}/999999"), &[AUTH]).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["message"], "Not Found");

    // Labels.
    let a = post(
        &sim,
        &format!("{base}/{id}/labels"),
        &[AUTH],
        json!({ "labels": ["extra"] }),
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(a.json()["labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "extra"));
    let a = delete(&sim, &format!("{base}/{id}/labels/extra"), &[AUTH]).await;
    assert_eq!(a.status, 200);
    let a = delete(&sim, &format!("{base}/{id}/labels/extra"), &[AUTH]).await;
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
    let a = delete(&sim, &format!("{base}/{id}"), &[AUTH]).await;
    assert_eq!(a.status, 422);
    let mut sim_runner = sim.runner(id).unwrap();
    assert!(sim_runner.busy);
    sim.set_online(id, false).unwrap();
    sim_runner = sim.runner(id).unwrap();
    assert!(!sim_runner.busy);
    let a = delete(&sim, &format!("{base}/{id}"), &[AUTH]).await;
    assert_eq!(a.status, 204);
    let a = delete(&sim, &format!("{base}/{id}"), &[AUTH]).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn groups_rate_limit_and_headers() {
    let sim = start().await;
    sim.add_runner_group("acme", "GPU").unwrap();
    let a = get(&sim, "/orgs/acme/actions/runner-groups", &[AUTH]).await;
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
    let a = get(&sim, "/rate_limit", &[AUTH]).await;
    let v = a.json();
    assert_eq!(v["resources"]["core"]["limit"], 5000);
    assert_eq!(v["rate"]["remaining"], v["resources"]["core"]["remaining"]);
    let before = v["rate"]["remaining"].as_u64().unwrap();
    let a = get(&sim, "/rate_limit", &[AUTH]).await;
    assert_eq!(
        a.json()["rate"]["remaining"].as_u64().unwrap(),
        before,
        "free"
    );

    // Exhausted budget: 403 with remaining 0.
    sim.set_rate_remaining(0);
    let a = get(&sim, "/orgs/acme/actions/runners", &[AUTH]).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.header("x-ratelimit-remaining"), "0");
}

#[tokio::test]
async fn the_control_api_plays_the_vm_and_injects_faults() {
    let sim = start().await;
    let a = post(
        &sim,
        "/_sim/registration-token",
        &[],
        json!({ "scope": "repos/o/r" }),
    )
    .await;
    assert_eq!(a.status, 201);
    let token = a.json()["token"].as_str().unwrap().to_string();
    let reg = json!({ "scope": "repos/o/r", "name": "p-0", "labels": ["x"], "token": "wrong" });
    let a = post(&sim, "/_sim/runners", &[], reg).await;
    assert_eq!(a.status, 401);
    let reg = json!({ "scope": "repos/o/r", "name": "p-0", "labels": ["x"], "token": token });
    let a = post(&sim, "/_sim/runners", &[], reg).await;
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
    let a = post(
        &sim,
        "/_sim/jit/run",
        &[],
        json!({ "encoded_jit_config": "bm9wZQ==" }),
    )
    .await;
    assert_eq!(a.status, 401);

    let fault =
        json!({ "kind": "server_error", "status": 503, "count": 2, "route": "actions/runners" });
    assert_eq!(post(&sim, "/_sim/faults", &[], fault).await.status, 204);
    let fault = json!({ "kind": "rate_limited", "retry_after_secs": 9, "count": 1 });
    assert_eq!(post(&sim, "/_sim/faults", &[], fault).await.status, 204);
    let path = "/repos/o/r/actions/runners";
    assert_eq!(get(&sim, path, &[AUTH]).await.status, 503);
    assert_eq!(get(&sim, path, &[AUTH]).await.status, 503);
    let a = get(&sim, path, &[AUTH]).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.header("retry-after"), "9");
    let fault = json!({ "kind": "secondary_limit", "retry_after_secs": null, "count": 1 });
    post(&sim, "/_sim/faults", &[], fault).await;
    let a = get(&sim, path, &[AUTH]).await;
    assert_eq!(a.status, 403);
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .contains("secondary rate limit"));
    assert_eq!(get(&sim, path, &[AUTH]).await.status, 200);

    let a = get(&sim, "/_sim/stats", &[]).await;
    let stats = a.json();
    let route = "GET /repos/{owner}/{repo}/actions/runners";
    assert_eq!(stats["by_route"][route], 5);
    assert_eq!(stats["by_status"]["503"], 2);
    assert_eq!(stats["by_route_status"][route]["429"], 1);
    let a = get(&sim, "/_sim/state", &[]).await;
    assert!(a.json()["scopes"]["repos/o/r"]["runners"][id.to_string()].is_object());
    assert_eq!(delete(&sim, "/_sim/stats", &[]).await.status, 204);
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
    let a = get(&again, "/orgs/acme/actions/runners", &[AUTH]).await;
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
