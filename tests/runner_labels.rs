//! The labels a runner ends up with on GitHub (the simulator), per
//! lifecycle, through the engine: JIT runners are minted with
//! `self-hosted`, `linux`, `x64`, the pool's labels and `hangar-<fleet>`
//! unless the pool says `defaultLabels: false`; persistent runners get the
//! defaults from `config.sh`. The table in docs/fleet-file.md says the same.
//! The JIT request also carries the pool's `runner.workFolder`.

mod support;

use hangar::providers::github::{Auth, GithubConfig, GithubRegistry, Scope};
use hangar::providers::RunnerRegistry;
use hangar::secret::Secret;
use support::{fleet_yaml, pool, Rig, FLEET};

fn labels_of(rig: &Rig, name: &str) -> Vec<(String, String)> {
    let mut l: Vec<(String, String)> = rig
        .runner(name)
        .unwrap_or_else(|| panic!("no runner {name}"))
        .labels
        .into_iter()
        .map(|l| (l.name, l.kind))
        .collect();
    l.sort();
    l
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn jit_runners_get_githubs_default_labels_unless_the_pool_opts_out() {
    let opted_out = pool("bare", 1, true, 1, false).replace(
        "      labels: [test]\n",
        "      labels: [test]\n      defaultLabels: false\n",
    );
    let pools = format!(
        "{}{}{}",
        pool("jit", 1, true, 1, false),
        opted_out,
        pool("long", 1, false, 1, false)
    );
    let rig = Rig::new(&fleet_yaml(&["h1"], &pools)).await;
    rig.converge(5).await;
    let ours = format!("hangar-{FLEET}");

    assert_eq!(
        labels_of(&rig, &format!("{FLEET}-jit-0")),
        owned(&[
            ("self-hosted", "read-only"),
            ("linux", "read-only"),
            ("x64", "read-only"),
            ("test", "custom"),
            (&ours, "custom"),
        ])
    );
    assert_eq!(
        labels_of(&rig, &format!("{FLEET}-bare-0")),
        owned(&[("test", "custom"), (&ours, "custom")])
    );
    // config.sh (played by the sandbox) adds the defaults itself, in its
    // own spelling.
    assert_eq!(
        labels_of(&rig, &format!("{FLEET}-long-0")),
        owned(&[
            ("self-hosted", "read-only"),
            ("Linux", "read-only"),
            ("X64", "read-only"),
            ("test", "custom"),
            (&ours, "custom"),
        ])
    );
}

#[test]
fn opting_out_of_default_labels_needs_an_ephemeral_pool() {
    let p = pool("long", 1, false, 1, false).replace(
        "      labels: [test]\n",
        "      labels: [test]\n      defaultLabels: false\n",
    );
    let err = hangar::fleet::load_str("fleet.yaml", &fleet_yaml(&["h1"], &p))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("defaultLabels"), "{err}");
    let ok = pool("jit", 1, true, 1, false).replace(
        "      labels: [test]\n",
        "      labels: [test]\n      defaultLabels: false\n",
    );
    hangar::fleet::load_str("fleet.yaml", &fleet_yaml(&["h1"], &ok)).unwrap();
}

/// The JIT config names the pool's `runner.workFolder` (it was `_work`
/// whatever the file said); a name that is no slot of the fleet gets `_work`.
#[tokio::test]
async fn jit_configs_carry_the_pools_work_folder() {
    use base64::Engine;
    let sim = hangar::sim::start(hangar::sim::SimConfig::new("t"))
        .await
        .unwrap();
    let fleet = hangar::fleet::load_str(
        "fleet.yaml",
        "apiVersion: hangar/v1\nkind: Fleet\nmetadata:\n  name: wf\nspec:\n  github:\n    \
         repository: o/r\n    simulator: true\n  hosts:\n    - name: h\n      uri: sandbox\n  \
         pools:\n    - name: gpu\n      count: 1\n      ephemeral: true\n      runner:\n        \
         workFolder: jobs/here\n      vm: {cpus: 1, memory: 512MiB, disk: 4GiB, image: b.qcow2}\n",
    )
    .unwrap();
    let reg = GithubRegistry::new(GithubConfig {
        scope: Scope::Repository {
            owner: "o".into(),
            repo: "r".into(),
        },
        api_url: sim.base_url.clone(),
        auth: Auth::Token(Secret::new("t".to_string())),
        timeout: None,
    })
    .unwrap()
    .with_pools(&fleet.fleet);
    let folder = |config: &str| -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let doc: serde_json::Value = serde_json::from_slice(&b64.decode(config).unwrap()).unwrap();
        let runner = b64.decode(doc[".runner"].as_str().unwrap()).unwrap();
        let runner: serde_json::Value = serde_json::from_slice(&runner).unwrap();
        runner["WorkFolder"].as_str().unwrap().to_string()
    };
    let labels = vec!["gpu".to_string()];
    let jit = reg
        .jit_config("wf-gpu-0", &labels, "Default")
        .await
        .unwrap();
    assert_eq!(folder(jit.config.expose()), "jobs/here");
    let other = reg
        .jit_config("elsewhere-1", &labels, "Default")
        .await
        .unwrap();
    assert_eq!(folder(other.config.expose()), "_work");
}
