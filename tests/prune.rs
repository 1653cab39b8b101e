//! The guest's cache-prune script (src/provision/guest/cache-prune), run
//! with bash on real BuildKit `type=local` caches laid out per the OCI
//! image-layout spec (index.json, blobs/sha256/<digest of the content>):
//! blobs the index no longer reaches go, every referenced blob stays and
//! the layout stays valid; above budget a whole cache goes, oldest first,
//! never half of one and never one exported within the hour.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/provision/guest/cache-prune"
);

fn blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = hex::encode(Sha256::digest(bytes));
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

fn descriptor(media: &str, digest: &str, size: usize) -> Value {
    json!({ "mediaType": media, "digest": digest, "size": size })
}

/// A cache as BuildKit exports it: an index naming a manifest, which names
/// a config and `layers` layers. Returns the digests the index reaches.
fn layout(dir: &Path, tag: &str, layers: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut reached = Vec::new();
    let mut layer_descs = Vec::new();
    for i in 0..layers {
        let bytes = format!("layer {tag} {i}").repeat(1000).into_bytes();
        let d = blob(dir, &bytes);
        layer_descs.push(descriptor(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &d,
            bytes.len(),
        ));
        reached.push(d);
    }
    let config = json!({ "architecture": "amd64", "os": "linux", "tag": tag }).to_string();
    let config_d = blob(dir, config.as_bytes());
    reached.push(config_d.clone());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config_d, config.len()),
        "layers": layer_descs,
    })
    .to_string();
    let manifest_d = blob(dir, manifest.as_bytes());
    reached.push(manifest_d.clone());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor("application/vnd.oci.image.manifest.v1+json", &manifest_d, manifest.len())],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    reached
}

fn age(path: &Path, ago: &str) {
    let ok = Command::new("touch")
        .args(["-d", ago])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "touch -d {ago} {}", path.display());
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Every digest index.json reaches is a blob whose content has that digest.
fn assert_valid(layout: &Path, reached: &[String]) {
    for d in reached {
        let bytes = std::fs::read(blob_path(layout, d))
            .unwrap_or_else(|e| panic!("{}: referenced blob {d} is gone: {e}", layout.display()));
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            *d
        );
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert!(index["manifests"][0]["digest"].is_string());
}

fn run(cache: &Path, above: u8) -> String {
    let env = cache.parent().unwrap().join("guest.env");
    std::fs::write(
        &env,
        format!(
            "HANGAR_CACHE_DIR='{}'\nHANGAR_PRUNE_ABOVE='{above}'\nHANGAR_USER=''\n",
            cache.display()
        ),
    )
    .unwrap();
    let out = Command::new("bash")
        .arg(SCRIPT)
        .env("HANGAR_GUEST_ENV", &env)
        // No docker here: the script's docker steps are skipped, not faked.
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cache-prune failed:\n{text}");
    text
}

#[test]
fn prune_collects_unreferenced_blobs_and_keeps_every_layout_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let main = cache.join("buildx/main");
    let reached = layout(&main, "v1", 3);
    // An earlier export's blobs, no longer in the index: old ones go, one
    // written within the hour (an export in progress) stays.
    let stale: Vec<String> = (0..4)
        .map(|i| blob(&main, format!("old layer {i}").repeat(500).as_bytes()))
        .collect();
    for d in &stale {
        age(&blob_path(&main, d), "2 hours ago");
    }
    for d in &reached {
        age(&blob_path(&main, d), "3 hours ago");
    }
    let fresh = blob(&main, b"being exported right now");

    // Within budget (nothing is above 100 %): only the garbage goes.
    let out = run(&cache, 100);
    assert!(out.contains("removed 4 blobs"), "{out}");
    assert_valid(&main, &reached);
    for d in &stale {
        assert!(!blob_path(&main, d).exists(), "stale blob {d} kept");
    }
    assert!(
        blob_path(&main, &fresh).exists(),
        "a fresh blob was removed"
    );
    assert_eq!(
        std::fs::read_dir(main.join("blobs/sha256"))
            .unwrap()
            .count(),
        reached.len() + 1
    );
}

#[test]
fn above_budget_whole_caches_go_oldest_first_and_recent_ones_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let old = cache.join("buildx/old-branch");
    let recent = cache.join("buildx/main");
    layout(&old, "old", 2);
    age(&old.join("index.json"), "2 days ago");
    let reached = layout(&recent, "main", 2);
    std::fs::write(cache.join("notes.txt"), "not a cache").unwrap();

    // A budget of 0 % is always exceeded: everything removable goes.
    let out = run(&cache, 0);
    assert!(!old.exists(), "the old cache survived:\n{out}");
    assert!(out.contains("least recently exported"), "{out}");
    assert_valid(&recent, &reached);
    assert!(
        cache.join("notes.txt").exists(),
        "a file outside any cache was removed"
    );
}
