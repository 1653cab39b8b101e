//! `hangar github-sim` serves GitHub App authentication: an App fleet runs
//! apply, diff, status and destroy against the served simulator through the
//! binary and exits 0 each time.

use std::path::Path;
use std::process::{Command, Stdio};

#[path = "support/served.rs"]
mod served;

use served::{control, play_guests, serve};

const BIN: &str = env!("CARGO_BIN_EXE_hangar");

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/github-app")
        .join(name)
        .display()
        .to_string()
}

fn app_fleet(port: u16) -> String {
    format!(
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: appfleet\nspec:\n  github:\n    \
         repository: acme/widgets\n    apiUrl: http://127.0.0.1:{port}\n    auth:\n      app:\n        \
         appId: 4242\n        installationId: 77\n        privateKeyFile: {}\n  policy:\n    \
         bootTimeout: 5m\n  hosts:\n    - name: h1\n      uri: sandbox\n  pools:\n    - name: pr\n      \
         count: 1\n      ephemeral: true\n      labels: [app]\n      vm: {{cpus: 1, memory: 512MiB, disk: 4GiB, image: base.qcow2}}\n",
        fixture("private-key.pem")
    )
}

fn hangar(state: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["--color", "never"])
        .args(args)
        .env("HANGAR_STATE_DIR", state)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn an_app_fleet_applies_diffs_shows_and_destroys_against_the_served_simulator() {
    let public = fixture("public-key.pem");
    let sim = serve(&[
        "--app-id",
        "4242",
        "--app-installation-id",
        "77",
        "--app-public-key",
        &public,
    ]);
    let port = sim.port;
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("fleet.yaml");
    std::fs::write(&file, app_fleet(port)).unwrap();
    let f = file.to_str().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let player = {
        let stop = stop.clone();
        std::thread::spawn(move || play_guests(port, stop))
    };
    for args in [
        &["apply", "-f", f, "--wait", "60s"][..],
        &["diff", "-f", f],
        &["status", "-f", f],
        &["destroy", "-f", f, "--yes"],
    ] {
        let (code, out) = hangar(state.path(), args);
        assert_eq!(code, 0, "{out}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    player.join().unwrap();
    // The App's JWT bought installation tokens, and they did the work.
    let stats: serde_json::Value =
        serde_json::from_str(&control(port, "GET", "/_sim/stats")).unwrap();
    let minted =
        &stats["by_route_status"]["POST /app/installations/{installation_id}/access_tokens"]["201"];
    assert!(minted.as_u64().unwrap_or(0) >= 1, "{stats}");
    let state: serde_json::Value =
        serde_json::from_str(&control(port, "GET", "/_sim/state")).unwrap();
    assert_eq!(
        state["scopes"]["repos/acme/widgets"]["runners"],
        serde_json::json!({})
    );
}

#[test]
fn without_app_flags_the_app_fleet_is_refused() {
    let sim = serve(&[]);
    let port = sim.port;
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("fleet.yaml");
    std::fs::write(&file, app_fleet(port)).unwrap();
    let (code, out) = hangar(state.path(), &["diff", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}");
}
