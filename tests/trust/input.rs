//! Defects 7, 8, 9 and 13: what the fleet file names is checked before
//! anything acts on it, with located errors (`hangar validate`, exit 2).

use std::process::Command;

/// A valid fleet file with `host` as its one host's extra lines, `vm` as
/// the pool's extra vm lines and `pool` as the pool's extra lines.
fn fleet(api_url: &str, host: &str, image: &str, pool: &str) -> String {
    fleet_file(
        api_url,
        "tokenEnv: GITHUB_TOKEN",
        "qemu:///system",
        host,
        image,
        pool,
    )
}

/// The fleet file of these tests: one host, one pool of one VM.
pub(crate) fn fleet_file(
    api_url: &str,
    auth: &str,
    uri: &str,
    host: &str,
    image: &str,
    pool: &str,
) -> String {
    format!(
        "apiVersion: hangar/v1
kind: Fleet
metadata:
  name: t
spec:
  github:
    repository: o/r
    apiUrl: {api_url}
    auth:
      {auth}
  hosts:
    - name: h1
      uri: {uri}
{host}  pools:
    - name: p
      count: 1
      labels: [L]
      vm:
        cpus: 1
        memory: 1GiB
        disk: 10GiB
        image: {image}
{pool}"
    )
}

fn ok_fleet() -> String {
    fleet("https://api.github.com", "", "base.qcow2", "")
}

/// `hangar validate` of `yaml`: (exit code, stderr).
fn validate(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hangar"))
        .args(["validate", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Refused with exit 2, at `line`, naming `field` and saying `why`.
fn refused(yaml: &str, line: usize, field: &str, why: &str) -> String {
    let (code, err) = validate(yaml);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("fleet.yaml:{line}:")),
        "line {line}: {err}"
    );
    assert!(err.contains(field), "{field}: {err}");
    assert!(err.contains(why), "{why}: {err}");
    err
}

#[test]
fn the_base_file_is_valid() {
    let (code, err) = validate(&ok_fleet());
    assert_eq!(code, 0, "{err}");
}

#[test]
fn defect_07_host_uris_that_run_programs_are_refused_unless_allowed() {
    for uri in [
        "qemu+ext:///system?command=/path/x",
        "qemu+ssh://h/system?command=/path/x",
        "qemu+ssh://h/system?netcat=/tmp/nc",
        "qemu+libssh://h/system?socket=/x",
    ] {
        let yaml = ok_fleet().replace("uri: qemu:///system", &format!("uri: {uri}"));
        refused(&yaml, 13, "spec.hosts[0].uri", "allowUnsafeUri: true");
        let allowed = yaml.replace(
            &format!("uri: {uri}\n"),
            &format!("uri: {uri}\n      allowUnsafeUri: true\n"),
        );
        let (code, err) = validate(&allowed);
        assert_eq!(code, 0, "{uri}: {err}");
    }
}

#[test]
fn defect_08_host_path_images_must_be_normalized_and_image_dirs_too() {
    refused(
        &fleet(
            "https://api.github.com",
            "",
            "/var/lib/images/../../../etc/shadow",
            "",
        ),
        22,
        "spec.pools[0].vm.image",
        "normalized",
    );
    refused(
        &fleet(
            "https://api.github.com",
            "      imageDirs: [/var/lib/../etc]\n",
            "/var/lib/images/u.qcow2",
            "",
        ),
        14,
        "spec.hosts[0].imageDirs[0]",
        "normalized",
    );
    let (code, err) = validate(&fleet(
        "https://api.github.com",
        "      imageDirs: [/var/lib/images]\n",
        "/var/lib/images/u.qcow2",
        "",
    ));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn defect_09_values_written_into_guest_files_keep_their_syntax() {
    for (extra, line, field) in [
        (
            "      cache:\n        size: 1GiB\n        mountPath: \"/var/cache\\n/dev/sda / ext4\"\n",
            25,
            "spec.pools[0].cache.mountPath",
        ),
        (
            "      cache:\n        size: 1GiB\n        mountPath: /var/cache hangar\n",
            25,
            "spec.pools[0].cache.mountPath",
        ),
        (
            "      runner:\n        preinstalled: \"/opt/r;reboot\"\n",
            24,
            "spec.pools[0].runner.preinstalled",
        ),
        (
            "      runner:\n        workFolder: \"_work$(id)\"\n",
            24,
            "spec.pools[0].runner.workFolder",
        ),
    ] {
        refused(
            &fleet("https://api.github.com", "", "base.qcow2", extra),
            line,
            field,
            "contains",
        );
    }
    let yaml = ok_fleet().replace("labels: [L]", "labels: [L, \"a'b\"]");
    refused(&yaml, 17, "spec.pools[0].labels[1]", "quote");
}

#[test]
fn defect_13_credentials_in_urls_are_refused_and_never_echoed() {
    let err = refused(
        &fleet("http://user:PASSWORD@127.0.0.1:9", "", "base.qcow2", ""),
        8,
        "spec.github.apiUrl",
        "credentials",
    );
    assert!(!err.contains("PASSWORD"), "{err}");
}

#[test]
fn bare_carriage_returns_end_lines_in_errors_and_snippets_alike() {
    // Old Mac line ends: YAML and editors count each `\r` as a line break.
    let yaml = ok_fleet().replace("cpus: 1", "cpus: 0").replace('\n', "\r");
    let (code, err) = validate(&yaml);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("fleet.yaml:19:15: spec.pools[0].vm.cpus"),
        "{err}"
    );
    let snippet_line = err
        .lines()
        .find(|l| l.contains("19 │"))
        .unwrap_or_else(|| panic!("no line 19 in the snippet: {err}"));
    assert!(snippet_line.contains("cpus: 0"), "{err}");
}
