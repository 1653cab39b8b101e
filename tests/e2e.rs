//! Guest-boot proof on a real libvirtd (`qemu:///system`): one ephemeral
//! runner guest made only from hangar's rendered user-data boots the e2e base
//! image (tests/e2e/build-image.sh), provisions itself, "runs a job" with the
//! JIT config it was given, and powers off, which ends the domain. The
//! runner comes as hangar hands it over (a tarball on a read-only disk, its
//! sha256 checked in the guest); after power-off the guest's whole root disk
//! is searched for the JIT config, which must be gone.
//!
//! Drives virsh directly, not hangar's libvirt provider. Runs when
//! HANGAR_REQUIRE_LIBVIRTD=1 (`.ci/run`), is skipped with a message
//! otherwise. Needs root (the image build and qemu:///system).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hangar::model::credential::RunnerCredential;
use hangar::providers::libvirt::seed::seed_iso;
use hangar::providers::Seed;
use hangar::provision::{
    credential_file, meta_data, user_data, DockerSource, Guest, GuestCache, GuestUser,
    RunnerInstall, CACHE_DISK_SERIAL,
};
use hangar::secret::Secret;
use sha2::{Digest, Sha256};

#[path = "kit/e2e_image.rs"]
mod e2e_image;
#[path = "kit/virsh.rs"]
mod virsh;
use e2e_image::{build_image, Progress};
use virsh::{must, upload_raw, virsh};
const CACHE_BYTES: u64 = 1 << 30;
/// Software emulation: cloud-init finishes at ~70 s of guest uptime on an
/// idle machine, several times that on a loaded one. A guest silent on its
/// console this long is stuck...
const BOOT_IDLE: Duration = Duration::from_secs(240);
/// ...and no boot may take longer than this at all.
const BOOT_CAP: Duration = Duration::from_secs(1200);

/// Everything this test made in libvirt, removed even when the test panics.
struct Made {
    pool: Option<String>,
    volumes: Vec<String>,
    domain: Option<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(domain) = &self.domain {
            let _ = virsh(&["destroy", domain]);
            if let Err(e) = virsh(&["undefine", domain]) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Some(pool) = &self.pool {
            for vol in &self.volumes {
                if let Err(e) = virsh(&["vol-delete", "--pool", pool, vol]) {
                    eprintln!("cleanup: {e}");
                }
            }
            if let Err(e) = virsh(&["pool-destroy", pool]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[test]
fn ephemeral_guest_provisions_runs_one_job_and_powers_off() {
    if !e2e_image::required("the guest-boot proof") {
        return;
    }
    virsh(&["version"]).expect("libvirtd answers at qemu:///system (.ci/start-libvirtd)");
    let base = build_image();

    let name = format!("hangar-e2e-guest-{}", std::process::id());
    let dir = tempfile::Builder::new()
        .prefix("hangar-e2e-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let pool_dir = dir.path().join("pool");
    std::fs::create_dir(&pool_dir).unwrap();
    let console = dir.path().join("console.log");
    // The runner reaches the guest as hangar hands it over: a tarball on a
    // read-only disk with serial `hangar-runner` (here the stand-in runner,
    // packed like a release), checked by sha256 and unpacked in the guest.
    let runner_tar = dir.path().join("runner.tar.gz");
    let packed = Command::new("tar")
        .args(["-czf"])
        .arg(&runner_tar)
        .args([
            "-C",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/runner"),
        ])
        .args([
            "--mode=0755",
            "--owner=0",
            "--group=0",
            "config.sh",
            "run.sh",
        ])
        .status()
        .expect("run tar");
    assert!(packed.success(), "tar failed");
    let runner_bytes = std::fs::read(&runner_tar).unwrap();

    let guest = Guest {
        hostname: name.clone(),
        user: GuestUser {
            name: "github".to_string(),
            sudo: false,
        },
        docker: DockerSource::Preinstalled,
        runner: RunnerInstall::Volume {
            version: "2.330.0".to_string(),
            sha256: hex::encode(Sha256::digest(&runner_bytes)),
            size: runner_bytes.len() as u64,
        },
        work_folder: "_work".to_string(),
        labels: vec!["UMN".to_string(), "hangar-e2e".to_string()],
        runner_group: "Default".to_string(),
        ephemeral: true,
        cache: Some(GuestCache {
            mount_path: "/var/cache/hangar".to_string(),
            prune_above_percent: 80,
            docker_data_root: true,
            size_bytes: CACHE_BYTES,
        }),
        emulate: vec![],
        ssh_authorized_keys: vec![],
    };
    let jit = format!("eyJlMmUiOiJqaXQtY29uZmlnIn0{}", std::process::id());
    let credential = RunnerCredential::Jit {
        runner_id: 1,
        config: Secret::new(jit.clone()),
    };
    let seed = seed_iso(&Seed {
        user_data: user_data(&guest, &credential),
        meta_data: meta_data(&name, 1),
        credential: credential_file(&credential),
    })
    .expect("build the seed image");
    let seed_file = dir.path().join("seed.iso");
    std::fs::write(&seed_file, &seed).unwrap();

    let mut made = Made {
        pool: None,
        volumes: Vec::new(),
        domain: None,
    };
    must(&[
        "pool-create-as",
        &name,
        "dir",
        "--target",
        pool_dir.to_str().unwrap(),
    ]);
    made.pool = Some(name.clone());
    // A copy-on-write overlay of the base image, as hangar makes root disks.
    let root_xml = dir.path().join("root.xml");
    std::fs::write(
        &root_xml,
        format!(
            "<volume><name>root.qcow2</name><capacity unit='GiB'>4</capacity>\
             <target><format type='qcow2'/><compat>1.1</compat></target>\
             <backingStore><path>{}</path><format type='qcow2'/></backingStore></volume>",
            xml_escape(&base.image)
        ),
    )
    .unwrap();
    must(&["vol-create", &name, root_xml.to_str().unwrap()]);
    made.volumes.push("root.qcow2".to_string());
    must(&[
        "vol-create-as",
        &name,
        "cache.raw",
        &CACHE_BYTES.to_string(),
        "--format",
        "raw",
        "--allocation",
        "0",
    ]);
    made.volumes.push("cache.raw".to_string());
    made.volumes.push("seed.iso".to_string());
    upload_raw(&name, "seed.iso", &seed_file);
    made.volumes.push("runner.tar.gz".to_string());
    upload_raw(&name, "runner.tar.gz", &runner_tar);
    let path = |vol: &str| must(&["vol-path", "--pool", &name, vol]);

    let xml = format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>1536</memory>
  <vcpu>2</vcpu>
  <cpu mode='maximum'/>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{root}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{cache}'/>
      <target dev='vdb' bus='virtio'/>
      <serial>{serial}</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{seed}'/>
      <target dev='vdc' bus='virtio'/>
      <readonly/>
      <serial>{seed_serial}</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{runner}'/>
      <target dev='vdd' bus='virtio'/>
      <readonly/>
      <serial>{runner_serial}</serial>
    </disk>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
",
        kernel = xml_escape(&base.kernel),
        initrd = xml_escape(&base.initrd),
        cmdline = xml_escape(&base.cmdline),
        root = xml_escape(&path("root.qcow2")),
        cache = xml_escape(&path("cache.raw")),
        seed = xml_escape(&path("seed.iso")),
        runner = xml_escape(&path("runner.tar.gz")),
        runner_serial = hangar::model::runner::RUNNER_DISK_SERIAL,
        serial = CACHE_DISK_SERIAL,
        seed_serial = hangar::model::names::SEED_DISK_SERIAL,
        console = xml_escape(console.to_str().unwrap()),
    );
    let xml_file = dir.path().join("domain.xml");
    std::fs::write(&xml_file, &xml).unwrap();
    if Path::new("/usr/bin/virt-xml-validate").exists() {
        let ok = Command::new("virt-xml-validate")
            .arg(&xml_file)
            .arg("domain")
            .status()
            .unwrap();
        assert!(ok.success(), "virt-xml-validate refused the domain XML");
    }
    must(&["define", xml_file.to_str().unwrap()]);
    made.domain = Some(name.clone());

    let started = Instant::now();
    must(&["start", &name]);
    let markers = [
        "hangar: user ok",
        "hangar: cache mounted",
        "hangar: docker ok",
        "hangar: runner started",
        "hangar: job started",
        "hangar: job finished",
    ];
    let mut seen: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut progress = Progress::new(BOOT_IDLE, BOOT_CAP);
    let state = loop {
        let log = read_log(&console);
        for m in markers {
            if log.contains(m) {
                seen.entry(m).or_insert_with(|| started.elapsed());
            }
        }
        let state = must(&["domstate", &name]);
        // "in shutdown" is the guest powering off: not an end state yet.
        let settled = state != "running" && state != "in shutdown";
        if settled || progress.stalled(&log) || log.contains("hangar: failed") {
            break state;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let ended = started.elapsed();
    let log = read_log(&console);
    for m in markers {
        if let Some(at) = seen.get(m) {
            eprintln!("{at:>6.1?}  {m}");
        }
    }
    // Kept for a look after the run (the temp dir goes with the test).
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-guest-console.log");
    if std::fs::write(&kept, &log).is_ok() {
        eprintln!("console log: {}", kept.display());
    }
    eprintln!("{ended:>6.1?}  domain {state}");
    let show = || format!("console log ({}):\n{log}", console.display());

    assert!(
        !log.contains("hangar: failed"),
        "a stage failed; {}",
        show()
    );
    for m in markers {
        assert!(log.contains(m), "no `{m}` on the console; {}", show());
    }
    assert!(
        log.contains(&format!("hangar: cache mounted {CACHE_BYTES}")),
        "cache size; {}",
        show()
    );
    assert!(
        log.contains(&format!("hangar: runner started {name} UMN,hangar-e2e")),
        "runner name and labels; {}",
        show()
    );
    let hash = sha256_hex(&jit);
    assert!(
        log.contains(&format!("hangar: jitconfig sha256 {hash}")),
        "the guest's JIT config is not the one given; {}",
        show()
    );
    assert!(
        log.contains(&format!(
            "hangar-e2e-runner: run.sh --jitconfig sha256:{hash}"
        )),
        "the runner was not given the JIT config; {}",
        show()
    );
    let job = log
        .lines()
        .find(|l| l.contains("hangar-e2e-runner: job ran as "))
        .unwrap_or_else(|| panic!("the job did not run; {}", show()));
    assert!(
        job.contains("job ran as github in groups ") && job.contains("docker"),
        "the job's user: {job}"
    );
    assert!(!log.contains(&jit), "the JIT config reached the console");
    assert_eq!(
        state,
        "shut off",
        "the guest did not end the domain; {}",
        show()
    );
    // Powered off: the guest's whole root disk (overlay and base, as raw
    // bytes, free blocks included) holds no copy of the JIT config. The
    // stand-in runner keeps none in its own directory either.
    let raw = dir.path().join("root.raw");
    let converted = Command::new("qemu-img")
        .args(["convert", "-O", "raw", &path("root.qcow2")])
        .arg(&raw)
        .status()
        .expect("run qemu-img");
    assert!(converted.success(), "qemu-img convert failed");
    let hits = byte_offsets(&raw, &jit);
    let around: Vec<String> = hits.iter().map(|at| context(&raw, at, &jit)).collect();
    std::fs::remove_file(&raw).ok();
    assert!(
        hits.is_empty(),
        "the JIT config is still on the guest's disk at byte offsets {hits:?}:\n{}",
        around.join("\n")
    );
    drop(made);
    assert!(
        virsh(&["dominfo", &name]).is_err(),
        "the domain is still defined after cleanup"
    );
}

/// Byte offsets of `needle` in the file at `path` (`grep -obaF`: the raw
/// image is gigabytes).
fn byte_offsets(path: &Path, needle: &str) -> Vec<String> {
    let out = Command::new("grep")
        .args(["-obaF", needle])
        .arg(path)
        .output()
        .expect("run grep");
    // grep: 0 found, 1 not found, 2 error.
    assert!(
        out.status.code() != Some(2),
        "grep failed on {}",
        path.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(':').next().unwrap_or_default().to_string())
        .collect()
}

/// The printable bytes around offset `at` of `path`, the needle masked
/// (to tell which file held it).
fn context(path: &Path, at: &str, needle: &str) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let at: u64 = at.parse().unwrap_or(0);
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(at.saturating_sub(600))).unwrap();
    let mut buf = vec![0u8; 1200];
    let n = f.read(&mut buf).unwrap_or(0);
    let text: String = buf[..n]
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) || b == b'\n' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("@{at}: {}", text.replace(needle, "<JIT>"))
}

fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
