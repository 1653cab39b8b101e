//! The simulator's releases of actions/runner, runner downloads, App
//! installation routes, `/rate_limit` and group ETags, over raw HTTP.

#[path = "support/raw_http.rs"]
mod raw_http;

use hangar::sim::{self, SimConfig};
use raw_http::{get, post, start, AUTH, TOKEN};
use serde_json::json;

#[tokio::test]
async fn runner_releases_are_served_in_githubs_shape_with_etags() {
    let sim = start().await;
    // The seed: a release of actions/runner, so `latest` resolves offline.
    let latest = get(&sim, "/repos/actions/runner/releases/latest", &[]).await;
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
    let dl = get(&sim, path, &[]).await;
    assert_eq!(dl.status, 200);
    assert_eq!(dl.header("content-length"), x64["size"].to_string());
    assert_eq!(sim.rate().remaining, before);

    // ETag and a free 304.
    let etag = latest.header("etag").to_string();
    assert!(etag.starts_with("W/\""), "{etag}");
    let again = get(
        &sim,
        "/repos/actions/runner/releases/latest",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // A new release appears through the control API.
    let published = post(
        &sim,
        "/_sim/releases",
        &[],
        json!({ "version": "2.331.0", "published_at": "2030-01-02T03:04:05Z", "arches": ["x64"] }),
    )
    .await;
    assert_eq!(published.status, 201, "{}", published.body);
    let changed = get(
        &sim,
        "/repos/actions/runner/releases/latest",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.json()["tag_name"], "v2.331.0");
    assert_eq!(changed.json()["published_at"], "2030-01-02T03:04:05Z");

    // A prerelease is listed but is not `latest`; a given tarball is served as given.
    let body = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"not a tarball");
    let pre = post(&sim, "/_sim/releases", &[], json!({ "version": "2.332.0", "prerelease": true, "arches": ["arm64"], "tarball_base64": body,
                     "published_at": "2030-02-01T00:00:00Z" }))
    .await;
    assert_eq!(pre.status, 201);
    assert_eq!(pre.json()["assets"][0]["size"], 13);
    let latest = get(&sim, "/repos/actions/runner/releases/latest", &[]).await;
    assert_eq!(latest.json()["tag_name"], "v2.331.0");

    // The list: newest first, paged with Link.
    let page = get(&sim, "/repos/actions/runner/releases?per_page=2", &[]).await;
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
    let page2 = get(
        &sim,
        "/repos/actions/runner/releases?per_page=2&page=2",
        &[],
    )
    .await;
    assert_eq!(page2.json()[0]["tag_name"], format!("v{seed}"));

    // By tag; unknown tags and repositories are GitHub's 404.
    let tag = get(&sim, "/repos/actions/runner/releases/tags/v2.331.0", &[]).await;
    assert_eq!(
        tag.json()["assets"][0]["name"],
        "actions-runner-linux-x64-2.331.0.tar.gz"
    );
    let missing = get(&sim, "/repos/actions/runner/releases/tags/v9.9.9", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "Not Found");
    let none = get(&sim, "/repos/o/r/releases/latest", &[]).await;
    assert_eq!(none.status, 404);

    // Public, but a bad credential is still refused.
    let bad = get(
        &sim,
        "/repos/actions/runner/releases/latest",
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(bad.status, 401);

    // Refused input on the control route.
    let refused = post(&sim, "/_sim/releases", &[], json!({ "version": "two" })).await;
    assert_eq!(refused.status, 422);
}

#[tokio::test]
async fn the_seed_release_can_be_left_out() {
    let mut config = SimConfig::new(TOKEN);
    config.seed_runner_release = false;
    let sim = sim::start(config).await.unwrap();
    let latest = get(&sim, "/repos/actions/runner/releases/latest", &[]).await;
    assert_eq!(latest.status, 404);
}

#[tokio::test]
async fn downloads_installations_rate_limit_and_group_etags() {
    let sim = start().await;
    for scope in ["/repos/o/r", "/orgs/acme"] {
        let d = get(&sim, &format!("{scope}/actions/runners/downloads"), &[AUTH]).await;
        assert_eq!(d.status, 200, "{}", d.body);
        let apps = d.json();
        let x64 = apps
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["architecture"] == "x64")
            .unwrap();
        assert_eq!(x64["os"], "linux");
        let seed = sim::SEED_RUNNER_VERSION;
        assert_eq!(
            x64["filename"],
            format!("actions-runner-linux-x64-{seed}.tar.gz")
        );
        assert_eq!(x64["sha256_checksum"].as_str().unwrap().len(), 64);
    }
    let rate = get(&sim, "/rate_limit", &[AUTH]).await.json();
    assert!(rate["resources"]["search"]["limit"].is_u64(), "{rate}");
    assert!(rate["resources"]["core"]["limit"].is_u64());

    let groups = get(&sim, "/orgs/acme/actions/runner-groups", &[AUTH]).await;
    let etag = groups.header("etag").to_string();
    assert!(etag.starts_with("W/"), "{etag}");
    let again = get(
        &sim,
        "/orgs/acme/actions/runner-groups",
        &[AUTH, ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);

    // Without an App configured, the App routes are GitHub's 404; with a
    // token instead of a JWT, 401.
    let app = get(&sim, "/app", &[AUTH]).await;
    assert_eq!(app.status, 404);
    let no_auth = get(&sim, "/orgs/acme/installation", &[]).await;
    assert_eq!(no_auth.status, 404);
}
