use std::process::Command;

use super::*;

fn guest() -> Guest {
    Guest {
        hostname: "umn-x64-0".to_string(),
        user: GuestUser {
            name: "github".to_string(),
            sudo: true,
        },
        docker: DockerSource::Distro,
        runner: RunnerInstall::Preinstalled {
            path: "/opt/actions-runner".to_string(),
        },
        work_folder: "_work".to_string(),
        labels: vec!["UMN".to_string(), "hangar-umn".to_string()],
        runner_group: "Default".to_string(),
        ephemeral: true,
        cache: Some(GuestCache {
            mount_path: "/var/cache/hangar".to_string(),
            prune_above_percent: 80,
            docker_data_root: true,
            size_bytes: 1 << 30,
        }),
        emulate: vec!["arm64".to_string()],
        ssh_authorized_keys: vec![],
    }
}

fn parse(user_data: &str) -> serde_json::Value {
    serde_saphyr::from_str(user_data).expect("rendered user-data parses as YAML")
}

fn file<'a>(doc: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} is not written"))
}

#[test]
fn meta_data_names_the_instance_by_generation() {
    let doc: serde_json::Value = serde_saphyr::from_str(&meta_data("f-p-0", 3)).unwrap();
    assert_eq!(doc["instance-id"], "f-p-0-3");
    assert_eq!(doc["local-hostname"], "f-p-0");
    assert_ne!(meta_data("f-p-0", 3), meta_data("f-p-0", 4));
}

#[test]
fn markers_parse_from_console_lines() {
    assert_eq!(Marker::parse("hangar: user ok\r"), Some(Marker::UserOk));
    assert_eq!(
        Marker::parse("[  61.2] cloud-init[812]: hangar: cache mounted 1073741824"),
        Some(Marker::CacheMounted(1 << 30))
    );
    assert_eq!(
        Marker::parse("hangar: runner started f-p-0 UMN,hangar-f"),
        Some(Marker::RunnerStarted {
            name: "f-p-0".into(),
            labels: "UMN,hangar-f".into()
        })
    );
    assert_eq!(
        Marker::parse("hangar: failed docker"),
        Some(Marker::Failed("docker".into()))
    );
    assert_eq!(
        Marker::parse("hangar: job finished"),
        Some(Marker::JobFinished)
    );
    assert_eq!(Marker::parse("hangar-prune: cache at 90%"), None);
    assert_eq!(Marker::parse("hangar: jitconfig sha256 ab12"), None);
    assert_eq!(Marker::parse("hangar: cache mounted lots"), None);
}

#[test]
fn sh_quote_survives_the_shell() {
    for value in ["plain", "it's", "a b\nc", "$(reboot)`x`", "'", ""] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote(value)))
            .output()
            .expect("sh runs");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
    }
}

#[test]
fn guest_scripts_are_valid_shell() {
    for (name, body) in SCRIPTS {
        let shell = if body.starts_with("#!/bin/bash") {
            "bash"
        } else {
            "sh"
        };
        assert!(body.starts_with("#!/bin/"), "{name} has no shebang");
        let out = Command::new(shell)
            .arg("-n")
            .arg("-c")
            .arg(body)
            .output()
            .expect("shell runs");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_credential_travels_beside_the_user_data_not_in_it() {
    let jit = RunnerCredential::Jit {
        runner_id: 7,
        config: Secret::new("eyJjYW5hcnkiOiJqaXQifQ==".to_string()),
    };
    let text = user_data(&guest(), &jit);
    assert!(text.starts_with("#cloud-config\n"));
    assert!(!text.contains("eyJjYW5hcnkiOiJqaXQifQ=="));
    let doc = parse(&text);
    assert!(!doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"].as_str().unwrap().contains("credential")
            || f["path"].as_str().unwrap().contains("jitconfig")));
    assert_eq!(doc["runcmd"][0][0], "/usr/local/lib/hangar/provision.sh");
    assert_eq!(doc["users"][0]["groups"][0], "docker");
    assert_eq!(doc["users"][0]["sudo"], "ALL=(ALL) NOPASSWD:ALL");
    let file = credential_file(&jit);
    assert_eq!(format!("{file:?}"), "<redacted>");
    assert_eq!(file.expose(), "eyJjYW5hcnkiOiJqaXQifQ==");

    let registration = RunnerCredential::Registration {
        url: "https://github.com/o/r".to_string(),
        token: Secret::new("AABBCANARY".to_string()),
    };
    let text = user_data(&guest(), &registration);
    assert!(!text.contains("AABBCANARY"));
    assert!(text.contains("HANGAR_RUNNER_URL='https://github.com/o/r'"));
    assert_eq!(credential_file(&registration).expose(), "AABBCANARY");
}

#[test]
fn ephemeral_unit_powers_off_and_persistent_unit_restarts() {
    let ephemeral = runner_unit(&guest(), &Credential::Jit);
    assert!(ephemeral.contains("SuccessAction=poweroff\n"));
    assert!(ephemeral.contains("FailureAction=poweroff\n"));
    assert!(ephemeral.contains("LoadCredential=jitconfig:/run/hangar/credential\n"));
    assert!(!ephemeral.contains("Restart="));

    let persistent_guest = Guest {
        ephemeral: false,
        ..guest()
    };
    let registration = Credential::Registration {
        url: "https://github.com/o/r",
    };
    let persistent = runner_unit(&persistent_guest, &registration);
    assert!(persistent.contains("Restart=always\n"));
    assert!(persistent.contains("WantedBy=multi-user.target\n"));
    assert!(!persistent.contains("poweroff"));
    assert!(!persistent.contains("LoadCredential"));
}

#[test]
fn guest_env_carries_settings() {
    let registration = Credential::Registration {
        url: "https://github.com/o/r",
    };
    let env = guest_env(&guest(), &registration);
    assert!(env.contains("HANGAR_SEED_DEVICE='/dev/disk/by-id/virtio-hangar-seed'\n"));
    assert!(env.contains("HANGAR_SEED_CREDENTIAL='hangar-credential'\n"));
    assert!(env.contains("HANGAR_RUNNER_URL='https://github.com/o/r'\n"));
    assert!(env.contains("HANGAR_LABELS='UMN,hangar-umn'\n"));
    assert!(env.contains("HANGAR_CACHE_DIR='/var/cache/hangar'\n"));
    assert!(env.contains("HANGAR_EMULATE='arm64'\n"));
    assert!(env.contains("HANGAR_RUNNER_DIR='/opt/actions-runner'\n"));
}

#[test]
fn docker_data_root_goes_on_the_cache() {
    let doc = parse(&user_data_redacted(&guest(), true));
    let daemon: serde_json::Value = serde_json::from_str(
        file(&doc, "/etc/docker/daemon.json")["content"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(daemon["data-root"], "/var/cache/hangar/docker");

    let no_cache = Guest {
        cache: None,
        ..guest()
    };
    let doc = parse(&user_data_redacted(&no_cache, true));
    assert!(doc.get("fs_setup").is_none());
    assert!(doc.get("mounts").is_none());
    assert!(!doc["write_files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["path"] == "/etc/docker/daemon.json"));
}

#[test]
fn packages_follow_docker_source_and_emulation_sshd_comes_from_provisioning() {
    let doc = parse(&user_data_redacted(&guest(), true));
    assert_eq!(
        doc["packages"],
        serde_json::json!(["docker.io", "qemu-user-static", "binfmt-support"])
    );
    assert_eq!(doc["package_update"], true);

    let bare = Guest {
        docker: DockerSource::Preinstalled,
        emulate: vec![],
        ..guest()
    };
    let doc = parse(&user_data_redacted(&bare, true));
    assert!(doc.get("packages").is_none());
    assert!(doc.get("package_update").is_none());

    let ssh = Guest {
        docker: DockerSource::DockerCe,
        emulate: vec![],
        ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3Nza maint@umn".to_string()],
        ..guest()
    };
    let doc = parse(&user_data_redacted(&ssh, true));
    // provision.sh installs sshd where the image lacks it.
    assert!(doc.get("packages").is_none(), "{:?}", doc.get("packages"));
    assert!(doc.get("package_update").is_none());
    assert!(guest_env(&ssh, &Credential::Jit).contains("HANGAR_SSH='1'\n"));
    assert!(guest_env(&bare, &Credential::Jit).contains("HANGAR_SSH='0'\n"));
    assert_eq!(doc["ssh_pwauth"], false);
    assert_eq!(
        doc["users"][0]["ssh_authorized_keys"][0],
        "ssh-ed25519 AAAAC3Nza maint@umn"
    );
}
