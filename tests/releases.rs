//! Runner releases against the simulator over HTTP: resolving `latest` and
//! pinned versions ([`RunnerReleases`]), the hourly conditional re-check
//! with an injected clock, the cache file, and fetching + verifying
//! tarballs into the state directory ([`RunnerDist`]).

use chrono::{DateTime, Duration, Utc};
use hangar::model::runner::{RunnerChoice, RunnerTarball, RunnerVersion, VersionVerdict};
use hangar::providers::github::releases::{RunnerReleases, CACHE_FILE};
use hangar::providers::ErrorKind;
use hangar::runner_dist::{RunnerDist, RunnerSupply};
use hangar::sim::{self, PublishRelease, SimConfig, SimHandle, SEED_RUNNER_VERSION};
use sha2::Digest;

const TOKEN: &str = "sim-releases-token";
const LIST: &str = "GET /repos/{owner}/{repo}/releases";

async fn start() -> SimHandle {
    sim::start(SimConfig::new(TOKEN)).await.unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn pinned(v: &str, sha256: Option<&str>) -> RunnerChoice {
    RunnerChoice::Pinned {
        version: RunnerVersion::parse(v).unwrap(),
        sha256: sha256.map(str::to_owned),
    }
}

fn release(version: &str, published: &str) -> PublishRelease {
    PublishRelease {
        published_at: Some(at(published)),
        ..PublishRelease::runner(version)
    }
}

#[tokio::test]
async fn latest_resolves_to_the_seed_with_githubs_digest() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let releases = RunnerReleases::new(&sim.base_url, dir.path(), None).unwrap();
    let got = releases
        .resolve(&RunnerChoice::Latest, "arm64", Utc::now())
        .await
        .unwrap();
    let bytes = sim::fake_runner_tarball(SEED_RUNNER_VERSION, "arm64");
    assert_eq!(
        got.tarball,
        RunnerTarball {
            version: SEED_RUNNER_VERSION.into(),
            arch: "arm64".into(),
            sha256: sha(&bytes),
            size: bytes.len() as u64,
        }
    );
    assert_eq!(
        got.url,
        format!(
            "{}/actions/runner/releases/download/v{SEED_RUNNER_VERSION}/actions-runner-linux-arm64-{SEED_RUNNER_VERSION}.tar.gz",
            sim.base_url
        )
    );
    assert_eq!(got.verdict, VersionVerdict::Ok);

    // The cache holds the ETag and no credential of any kind.
    let cache = std::fs::read_to_string(dir.path().join(CACHE_FILE)).unwrap();
    assert!(cache.contains("\"etag\": \"W/"), "{cache}");
    assert!(!cache.contains(TOKEN));
    assert!(!cache.to_lowercase().contains("authorization"));
}

#[tokio::test]
async fn a_new_release_is_picked_after_the_recheck_interval_at_no_rate_cost() {
    let sim = start().await;
    sim.publish_release(&release("2.331.0", "2030-01-01T00:00:00Z"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let releases = RunnerReleases::new(&sim.base_url, dir.path(), None).unwrap();
    let t0 = at("2030-01-10T00:00:00Z");
    let first = releases
        .resolve(&RunnerChoice::Latest, "x64", t0)
        .await
        .unwrap();
    assert_eq!(first.tarball.version, "2.331.0");
    assert_eq!(sim.stats().count(LIST), 1);

    // Within the hour: no request at all, even though a release appeared.
    sim.publish_release(&release("2.332.0", "2030-01-10T00:10:00Z"))
        .unwrap();
    let soon = releases
        .resolve(&RunnerChoice::Latest, "x64", t0 + Duration::minutes(59))
        .await
        .unwrap();
    assert_eq!(soon.tarball.version, "2.331.0");
    assert_eq!(sim.stats().count(LIST), 1);

    // After it: asked again, and the new release is the answer.
    let later = releases
        .resolve(&RunnerChoice::Latest, "x64", t0 + Duration::minutes(61))
        .await
        .unwrap();
    assert_eq!(later.tarball.version, "2.332.0");
    assert_eq!(sim.stats().count_status(LIST, 200), 2);

    // Nothing new an hour later: a 304, which costs no rate limit.
    let remaining = sim.rate().remaining;
    let same = releases
        .resolve(&RunnerChoice::Latest, "x64", t0 + Duration::minutes(122))
        .await
        .unwrap();
    assert_eq!(same.tarball.version, "2.332.0");
    assert_eq!(sim.stats().count_status(LIST, 304), 1);
    assert_eq!(sim.rate().remaining, remaining);

    // A second client on the same state directory (the next `hangar` run)
    // uses the cached list within the hour: no request.
    let next_run = RunnerReleases::new(&sim.base_url, dir.path(), None).unwrap();
    next_run
        .resolve(&RunnerChoice::Latest, "x64", t0 + Duration::minutes(130))
        .await
        .unwrap();
    assert_eq!(sim.stats().count(LIST), 3);
}

#[tokio::test]
async fn an_unreadable_cache_is_fetched_again() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CACHE_FILE), "{ not json").unwrap();
    let releases = RunnerReleases::new(&sim.base_url, dir.path(), None).unwrap();
    let got = releases
        .resolve(&RunnerChoice::Latest, "x64", Utc::now())
        .await
        .unwrap();
    assert_eq!(got.tarball.version, SEED_RUNNER_VERSION);
    assert_eq!(sim.stats().count(LIST), 1);
    let cache = std::fs::read_to_string(dir.path().join(CACHE_FILE)).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&cache).is_ok());
}

#[tokio::test]
async fn pinned_versions_take_the_digest_or_check_the_pin_and_warn_past_the_window() {
    let sim = start().await;
    sim.publish_release(&release("2.331.0", "2030-01-01T00:00:00Z"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let releases = RunnerReleases::new(&sim.base_url, dir.path(), None).unwrap();
    let seed_sha = sha(&sim::fake_runner_tarball(SEED_RUNNER_VERSION, "x64"));

    // Without sha256: the release asset's digest.
    let now = at("2030-02-15T00:00:00Z");
    let got = releases
        .resolve(&pinned(SEED_RUNNER_VERSION, None), "x64", now)
        .await
        .unwrap();
    assert_eq!(got.tarball.sha256, seed_sha);
    // 2.331.0 came out on 2030-01-01: the seed's window closed on 01-31.
    assert_eq!(
        got.verdict,
        VersionVerdict::Warning(format!(
            "{SEED_RUNNER_VERSION} is older than GitHub's 30-day window: 2.331.0 was published on 2030-01-01; \
             runners stopped receiving jobs on 2030-01-31"
        ))
    );

    // With the right sha256: fine; with a wrong one: refused, naming both.
    let ok = releases
        .resolve(&pinned(SEED_RUNNER_VERSION, Some(&seed_sha)), "x64", now)
        .await
        .unwrap();
    assert_eq!(ok.tarball.sha256, seed_sha);
    let wrong = "0".repeat(64);
    let err = releases
        .resolve(&pinned(SEED_RUNNER_VERSION, Some(&wrong)), "x64", now)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(
        err.message.contains(&wrong) && err.message.contains(&seed_sha),
        "{}",
        err.message
    );

    // A release off the list's page is read once by its tag, then cached.
    let mut old = release("2.329.5", "2029-01-01T00:00:00Z");
    old.repo = "actions/runner".into();
    sim.publish_release(&old).unwrap();
    let tagged = releases
        .resolve(&pinned("2.329.5", None), "x64", now)
        .await
        .unwrap();
    assert_eq!(tagged.tarball.version, "2.329.5");
    assert_eq!(sim.stats().count("/releases/tags/"), 1);
    releases
        .resolve(&pinned("2.329.5", None), "arm", now)
        .await
        .unwrap();
    assert_eq!(sim.stats().count("/releases/tags/"), 1);

    // A release GitHub does not have, and an architecture it was not built for.
    let err = releases
        .resolve(&pinned("2.399.0", None), "x64", now)
        .await
        .unwrap_err();
    assert!(
        err.message.contains("no release 2.399.0"),
        "{}",
        err.message
    );
    let err = releases
        .resolve(&RunnerChoice::Latest, "riscv64", now)
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("actions-runner-linux-riscv64-2.331.0.tar.gz"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn tarballs_are_fetched_once_verified_and_a_bad_digest_leaves_nothing() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let supply = RunnerSupply::new(&sim.base_url, dir.path(), None).unwrap();
    let (local, verdict) = supply
        .tarball(&RunnerChoice::Latest, "x64", Utc::now())
        .await
        .unwrap();
    assert_eq!(verdict, VersionVerdict::Ok);
    let expected_path = dir.path().join(format!(
        "runners/actions-runner-linux-x64-{SEED_RUNNER_VERSION}.tar.gz"
    ));
    assert_eq!(local.path, expected_path);
    let bytes = std::fs::read(&local.path).unwrap();
    assert_eq!(bytes, sim::fake_runner_tarball(SEED_RUNNER_VERSION, "x64"));
    let downloads = || sim.stats().count("/releases/download/");
    assert_eq!(downloads(), 1);

    // Again, in this process and in a new one (a fresh RunnerDist): no request.
    supply
        .tarball(&RunnerChoice::Latest, "x64", Utc::now())
        .await
        .unwrap();
    let fresh = RunnerDist::new(dir.path());
    let again = fresh
        .fetch(&local.tarball, "http://127.0.0.1:9/unused")
        .await
        .unwrap();
    assert_eq!(again, local);
    assert_eq!(downloads(), 1);

    // A copy that no longer matches is replaced.
    std::fs::write(&local.path, b"tampered").unwrap();
    let url = format!(
        "{}/actions/runner/releases/download/v{SEED_RUNNER_VERSION}/{}",
        sim.base_url,
        local.tarball.file_name()
    );
    RunnerDist::new(dir.path())
        .fetch(&local.tarball, &url)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&local.path).unwrap(), bytes);
    assert_eq!(downloads(), 2);

    // A tarball whose bytes do not match the expected digest: refused, and
    // nothing is left in the directory, neither the file nor a partial one.
    let mut lie = local.tarball.clone();
    lie.arch = "arm64".into();
    let url = format!(
        "{}/actions/runner/releases/download/v{SEED_RUNNER_VERSION}/{}",
        sim.base_url,
        lie.file_name()
    );
    lie.size = sim::fake_runner_tarball(SEED_RUNNER_VERSION, "arm64").len() as u64;
    lie.sha256 = "1".repeat(64);
    let err = RunnerDist::new(dir.path())
        .fetch(&lie, &url)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.message.contains("sha256"), "{}", err.message);
    let left: Vec<String> = std::fs::read_dir(dir.path().join("runners"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, [local.tarball.file_name()]);

    // More bytes than the release says: refused before they are all read.
    let mut short = lie.clone();
    short.size = 10;
    let err = RunnerDist::new(dir.path())
        .fetch(&short, &url)
        .await
        .unwrap_err();
    assert!(err.message.contains("offers"), "{}", err.message);

    // Plain http is fetched only from loopback.
    let err = RunnerDist::new(dir.path())
        .fetch(&lie, "http://example.com/x.tar.gz")
        .await
        .unwrap_err();
    assert!(err.message.contains("https"), "{}", err.message);
}
