//! Rendered user-data, checked by cloud-init itself (`cloud-init schema`),
//! by PyYAML (the YAML 1.1 parser cloud-init uses), by snapshot, and for
//! where the credential may appear.

use std::path::Path;
use std::process::Command;

use hangar::model::credential::RunnerCredential;
use hangar::provision::{
    credential_file, meta_data, user_data, user_data_redacted, DockerSource, Guest, GuestCache,
    GuestUser, RunnerInstall,
};
use hangar::secret::Secret;

const JIT_CANARY: &str = "eyJjYW5hcnkiOiJqaXQtY2FuYXJ5LTQxMSJ9";
const TOKEN_CANARY: &str = "AABBREGISTRATIONCANARY0042";

fn base(ephemeral: bool) -> Guest {
    Guest {
        hostname: "ldmx-umn-0".to_string(),
        user: GuestUser {
            name: "github".to_string(),
            sudo: false,
        },
        docker: DockerSource::Distro,
        runner: RunnerInstall::Download {
            version: "2.321.0".to_string(),
            sha256: "ba46ba7ce3a4d7236b16fbe44419fb453bc08f866b24f04d549ec89f1722a29e".to_string(),
        },
        work_folder: "_work".to_string(),
        labels: vec!["UMN".to_string(), "hangar-ldmx".to_string()],
        runner_group: "Default".to_string(),
        ephemeral,
        cache: Some(GuestCache {
            mount_path: "/var/cache/hangar".to_string(),
            prune_above_percent: 80,
            docker_data_root: true,
            size_bytes: 100 << 30,
        }),
        emulate: vec!["arm64".to_string()],
        ssh_authorized_keys: vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHangarTestKey maint@umn".to_string(),
        ],
    }
}

fn credential(ephemeral: bool) -> RunnerCredential {
    if ephemeral {
        RunnerCredential::Jit {
            runner_id: 411,
            config: Secret::new(JIT_CANARY.to_string()),
        }
    } else {
        RunnerCredential::Registration {
            url: "https://github.com/LDMX-Software".to_string(),
            token: Secret::new(TOKEN_CANARY.to_string()),
        }
    }
}

/// Every combination: ephemeral/persistent × Docker source × cache (none,
/// on, with Docker's data-root) × emulation × ssh keys × runner install.
fn variants() -> Vec<(String, Guest)> {
    let mut out = Vec::new();
    for ephemeral in [true, false] {
        for docker in [
            DockerSource::Distro,
            DockerSource::DockerCe,
            DockerSource::Preinstalled,
        ] {
            for cache in 0..3 {
                for emulate in [false, true] {
                    for ssh in [false, true] {
                        for preinstalled in [false, true] {
                            let mut g = base(ephemeral);
                            g.docker = docker;
                            g.user.sudo = ssh;
                            match cache {
                                0 => g.cache = None,
                                1 => g.cache.as_mut().unwrap().docker_data_root = false,
                                _ => {}
                            }
                            if !emulate {
                                g.emulate.clear();
                            }
                            if !ssh {
                                g.ssh_authorized_keys.clear();
                            }
                            if preinstalled {
                                g.runner = RunnerInstall::Preinstalled {
                                    path: "/opt/actions-runner".to_string(),
                                };
                            }
                            let name = format!(
                                "{}-{docker:?}-cache{cache}-emulate{emulate}-ssh{ssh}-pre{preinstalled}",
                                if ephemeral { "ephemeral" } else { "persistent" }
                            );
                            out.push((name, g));
                        }
                    }
                }
            }
        }
    }
    out
}

/// cloud-init present, or absent with a message; absent fails the test when
/// the real-machine suite is required.
fn have_cloud_init() -> bool {
    let found = Command::new("cloud-init")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("HANGAR_REQUIRE_LIBVIRTD").as_deref() != Ok("1"),
            "cloud-init is not installed but HANGAR_REQUIRE_LIBVIRTD=1 (run .ci/install-deps)"
        );
        eprintln!("SKIPPED: cloud-init is not installed (run .ci/install-deps); user-data not schema-checked");
    }
    found
}

fn schema_check(path: &Path) {
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(path)
        .output()
        .expect("cloud-init runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("Valid cloud-config"),
        "{}: cloud-init schema refused it:\n{stdout}\n{stderr}",
        path.display()
    );
}

/// What cloud-init's own YAML parser (PyYAML, YAML 1.1) makes of the file, as
/// JSON: catches strings that YAML 1.1 would read as numbers or booleans.
fn pyyaml(path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML output is JSON")
}

#[test]
fn every_variant_passes_cloud_init_schema_and_reads_the_same_in_pyyaml() {
    if !have_cloud_init() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let variants = variants();
    assert_eq!(variants.len(), 144);
    for (name, guest) in &variants {
        let rendered = user_data(guest, &credential(guest.ephemeral));
        let text = rendered.as_str();
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        schema_check(&path);

        let ours: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        assert_eq!(pyyaml(&path), ours, "{name}: PyYAML reads it differently");
        for file in ours["write_files"].as_array().unwrap() {
            let mode = file["permissions"]
                .as_str()
                .expect("permissions stay a string");
            assert!(mode.len() == 4 && mode.starts_with('0'), "{name}: {mode}");
        }
    }
    let redacted = dir.path().join("redacted.yaml");
    for ephemeral in [true, false] {
        std::fs::write(&redacted, user_data_redacted(&base(ephemeral), ephemeral)).unwrap();
        schema_check(&redacted);
    }
}

#[test]
fn meta_data_reads_the_same_in_pyyaml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta-data");
    std::fs::write(&path, meta_data("ldmx-umn-0", 12)).unwrap();
    if Command::new("python3")
        .arg("-c")
        .arg("import yaml")
        .status()
        .is_ok_and(|s| s.success())
    {
        assert_eq!(
            pyyaml(&path),
            serde_json::json!({"instance-id": "ldmx-umn-0-12", "local-hostname": "ldmx-umn-0"})
        );
    } else {
        eprintln!("SKIPPED: python3 with PyYAML is missing (it comes with cloud-init)");
    }
}

#[test]
fn redacted_ephemeral_user_data() {
    insta::assert_snapshot!(user_data_redacted(&base(true), true));
}

#[test]
fn redacted_persistent_user_data() {
    let mut guest = base(false);
    guest.docker = DockerSource::DockerCe;
    guest.user.sudo = true;
    guest.emulate.clear();
    guest.ssh_authorized_keys.clear();
    guest.cache.as_mut().unwrap().docker_data_root = false;
    insta::assert_snapshot!(user_data_redacted(&guest, false));
}

#[test]
fn the_credential_is_never_in_the_user_data_and_rendering_needs_none() {
    for ephemeral in [true, false] {
        let guest = base(ephemeral);
        let canary = if ephemeral { JIT_CANARY } else { TOKEN_CANARY };
        let credential = credential(ephemeral);
        let text = user_data(&guest, &credential);
        assert!(!text.contains(JIT_CANARY) && !text.contains(TOKEN_CANARY));
        // It travels as the seed's own file, and only there.
        let file = credential_file(&credential);
        assert_eq!(file.expose(), canary);
        assert_eq!(format!("{file:?} {file}"), "<redacted> <redacted>");

        // What `render user-data` prints is what the VM gets, up to the
        // registration URL.
        let redacted = user_data_redacted(&guest, ephemeral);
        let mut expected = text.clone();
        if !ephemeral {
            expected = expected.replace("https://github.com/LDMX-Software", "<registration-url>");
        }
        let expected: serde_json::Value = serde_saphyr::from_str(&expected).unwrap();
        let redacted: serde_json::Value = serde_saphyr::from_str(&redacted).unwrap();
        assert_eq!(redacted, expected);
    }
}
