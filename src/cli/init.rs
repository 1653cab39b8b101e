//! `hangar init`: a first fleet file for this machine, from what its local
//! libvirt says (cpus, memory, storage pools, KVM or not), with the JSON
//! Schema written next to it so that the modeline holds wherever both go
//! (`/etc/hangar/`). The file is validated before init says it is done.

use std::path::{Path, PathBuf};

use super::error::ExpectedError;
use crate::access::{survey, AccessError, Survey};
use crate::exit::ExitStatus;
use crate::model::units::bytes as format_bytes;

/// The schema's file name, next to the fleet file; the modeline names it
/// relative to the file, so it holds after both are copied elsewhere.
pub const SCHEMA_FILE: &str = "fleet.schema.json";

const GIB: u64 = 1 << 30;

pub struct InitArgs {
    pub uri: String,
    pub out: PathBuf,
    pub name: String,
    pub force: bool,
}

/// Write the schema into `dir`.
pub fn write_schema(dir: &Path) -> Result<PathBuf, ExpectedError> {
    let path = dir.join(SCHEMA_FILE);
    std::fs::write(&path, format!("{}\n", crate::fleet::schema_json()))
        .map_err(|e| ExpectedError::Usage(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

pub async fn init(args: InitArgs) -> Result<ExitStatus, ExpectedError> {
    if args.out.exists() && !args.force {
        return Err(ExpectedError::Usage(format!(
            "{} exists; give --force to replace it",
            args.out.display()
        )));
    }
    let uri = args.uri.clone();
    let host = tokio::task::spawn_blocking(move || survey(&uri))
        .await
        .map_err(|e| ExpectedError::Usage(format!("libvirt task failed: {e}")))?
        .map_err(AccessError::from)?;
    let text = fleet_file(&args, &host)?;
    let dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::write(&args.out, &text)
        .map_err(|e| ExpectedError::Usage(format!("cannot write {}: {e}", args.out.display())))?;
    let schema = write_schema(dir)?;
    eprintln!("wrote {} and {}", args.out.display(), schema.display());
    super::commands::validate(&args.out, super::args::Output::Human)
}

/// The fleet file for `host`: one host, one small persistent pool.
fn fleet_file(args: &InitArgs, host: &Survey) -> Result<String, ExpectedError> {
    let pool = host
        .pools
        .iter()
        .filter(|p| p.active)
        .max_by_key(|p| (p.name == "default", p.available_bytes))
        .ok_or_else(|| {
            ExpectedError::Usage(format!(
                "{} has no active storage pool: define one (`virsh pool-define-as default dir --target /var/lib/libvirt/images`, then pool-start and pool-autostart)",
                args.uri
            ))
        })?;
    let cpus = (host.cpus / 4).clamp(1, 4);
    // A quarter of the memory per VM, at most 8GiB, at least 1GiB.
    let memory = (host.memory_bytes / 4 / GIB).clamp(1, 8) * GIB;
    let domain_type = match (host.test_driver, host.kvm) {
        (true, _) => String::new(),
        // Offered is not proven: `auto` decides (see docs/fleet-file.md);
        // `kvm` insists on it.
        (false, true) => {
            "      # domainType: kvm               # the host offers KVM; `auto` (the default) decides\n"
                .into()
        }
        (false, false) => {
            "      domainType: qemu                # no KVM here: software emulation (slow)\n".into()
        }
    };
    Ok(format!(
        "\
# yaml-language-server: $schema={SCHEMA_FILE}
#
# Written by `hangar init --uri {uri}` for this machine: {cpus_host} cpus,
# {mem_host} of memory, storage pool `{pool}` ({free} free of {cap}).
# Fill in the repository and the token, put the base image in place, then:
#   hangar validate -f FILE && hangar diff -f FILE && hangar apply -f FILE
apiVersion: hangar/v1
kind: Fleet
metadata:
  name: {name}
spec:
  github:
    repository: OWNER/REPO            # or organization: ORG
    auth:
      tokenFile: /etc/hangar/github-token
  hosts:
    - name: {name}-host
      uri: {uri}
      storagePool: {pool}
{domain_type}  pools:
    - name: runners
      count: 1
      labels: [{name}]
      vm:
        cpus: {cpus}
        memory: {memory}GiB
        disk: 32GiB
        image: /var/lib/hangar/images/ubuntu-24.04-server-cloudimg-amd64.img
",
        uri = args.uri,
        cpus_host = host.cpus,
        mem_host = format_bytes(host.memory_bytes),
        pool = pool.name,
        free = format_bytes(pool.available_bytes),
        cap = format_bytes(pool.capacity_bytes),
        name = args.name,
        memory = memory / GIB,
    ))
}
