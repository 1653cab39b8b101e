//! `hangar console SLOT`: attach the terminal to the slot's serial console
//! (see [`crate::access::console`]; Ctrl-] detaches).

use std::path::Path;

use super::commands::Ctx;
use super::error::ExpectedError;
use crate::access::console::{self, Ended};
use crate::access::slot;
use crate::access::AccessError;
use crate::exit::ExitStatus;

type Result<T> = std::result::Result<T, ExpectedError>;

pub struct ConsoleArgs {
    pub slot: String,
    pub force: bool,
}

pub async fn console(ctx: &Ctx, file: &Path, args: ConsoleArgs) -> Result<ExitStatus> {
    let fleet = crate::files::fleet::load(file)?;
    let slot = slot::find(&fleet, &args.slot)?;
    let configs = slot::libvirt_hosts(&slot, &fleet, &ctx.state_dir);
    if configs.is_empty() {
        return Err(AccessError::Unavailable(format!(
            "{} runs in the sandbox, whose VMs have no serial console to attach to; \
             `hangar logs {}` shows what it printed",
            slot.name, slot.name
        ))
        .into());
    }
    let (fleet_name, name, force) = (fleet.name().to_string(), slot.name.clone(), args.force);
    let stop = super::commands::stop_signal();
    let stop2 = stop.clone();
    let session = tokio::task::spawn_blocking(move || {
        console::attach(&configs, &fleet_name, &name, force, &stop2, |found| {
            eprintln!(
                "Connected to {name} (generation {}) on host {}\r\nEscape character is ^] (Ctrl + ])\r",
                found.owner.generation,
                found.host()
            )
        })
    })
    .await
    .map_err(|e| ExpectedError::Usage(format!("console: {e}")))??;
    match session.ended {
        Ended::Detached => eprintln!("\ndetached from {}", slot.name),
        Ended::Closed => eprintln!(
            "\nthe console of {} on host {} closed (its VM stopped, or another client \
             took the console over)",
            slot.name, session.host
        ),
    }
    drop(stop);
    Ok(ExitStatus::Ok)
}
