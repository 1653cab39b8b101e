//! One function per subcommand. Each turns flags into settings, calls the
//! library, prints, and returns the exit status of a success (`Ok`, or
//! `Changes` for `diff`); every other ending is an [`ExpectedError`].

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::args::{Output, RenderWhat};
use super::error::ExpectedError;
use super::output::{EventView, Plans};
use super::status;
use crate::assemble::{self, Assembly};
use crate::exit::ExitStatus;
use crate::fleet::{self, FleetError, LoadedFleet};
use crate::metrics::Metrics;
use crate::plan::render;
use crate::reconcile::converge::{self, ConvergeSettings};
use crate::reconcile::daemon::{self, DaemonSettings, FleetSource};
use crate::reconcile::destroy::{self, DestroySettings};
use crate::reconcile::engine::Engine;
use crate::reconcile::event::Both;
use crate::reconcile::lock::FleetLock;
use crate::reconcile::status::StatusView;
use crate::reconcile::{self as engine, Error};
use std::sync::Arc;

type Result<T> = std::result::Result<T, ExpectedError>;

/// Settings shared by every command.
pub struct Ctx {
    pub state_dir: PathBuf,
    pub color: bool,
}

fn load(path: &Path) -> Result<LoadedFleet> {
    Ok(crate::files::fleet::load(path)?)
}

fn parse_duration(flag: &str, value: &str) -> Result<Duration> {
    // A bare 0 needs no unit: `--wait 0` means one pass.
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    value
        .parse::<fleet::units::Duration>()
        .map(|d| d.std())
        .map_err(|e| ExpectedError::Usage(format!("--{flag} {value:?}: {e}")))
}

async fn assemble(ctx: &Ctx, fleet: &LoadedFleet, stop: &CancellationToken) -> Result<Engine> {
    Ok(assemble::assemble(fleet, &ctx.state_dir, stop).await?)
}

fn lock(ctx: &Ctx, fleet: &LoadedFleet) -> Result<FleetLock> {
    Ok(FleetLock::try_acquire(&ctx.state_dir, fleet.name())?)
}

/// Cancelled on SIGTERM or Ctrl-C: no new action starts, the providers'
/// retries give up, reads in flight end, and changes under way get
/// [`crate::reconcile::STOP_GRACE`] to finish. A second signal exits
/// at once (exit 6), naming what it left half done.
pub(super) fn stop_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(
            "shutdown requested: finishing the actions under way (at most {}s); a second signal exits at once",
            crate::reconcile::STOP_GRACE.as_secs()
        );
        t.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let left = crate::reconcile::under_way::now();
        if left.is_empty() {
            eprintln!("interrupted again: exiting now; no action was under way");
        } else {
            eprintln!(
                "interrupted again: exiting now; left half done (the next run finishes or removes it):"
            );
            for l in left {
                eprintln!("  {l}");
            }
        }
        std::process::exit(i32::from(crate::exit::ExitStatus::Interrupted.code()));
    });
    token
}

fn confirm(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
}

fn print_status(view: &StatusView, out: Output) {
    match out {
        Output::Json => crate::outln!(
            "{}",
            serde_json::to_string_pretty(view).unwrap_or_else(|_| "{}".into())
        ),
        Output::Human => crate::out!("{}", status::human(view)),
    }
}

pub fn validate(file: &Path, out: Output) -> Result<ExitStatus> {
    let fleet = load(file)?;
    let f = &fleet.fleet;
    let slots: u32 = f.spec.pools.iter().map(|p| p.max_slots()).sum();
    match out {
        Output::Human => crate::outln!(
            "{}: fleet {} is valid: {} host(s), {} pool(s), {} runner slot(s)",
            file.display(),
            f.metadata.name,
            f.spec.hosts.len(),
            f.spec.pools.len(),
            slots
        ),
        Output::Json => crate::outln!(
            "{}",
            serde_json::json!({
                "file": file.display().to_string(),
                "valid": true,
                "fleet": f.metadata.name,
                "hosts": f.spec.hosts.len(),
                "pools": f.spec.pools.len(),
                "slots": slots,
            })
        ),
    }
    Ok(ExitStatus::Ok)
}

/// Exit 0 when the world equals the file, 1 when anything differs (waits
/// included: a plan of waits alone is not in sync), 3 when part of the
/// world could not be observed.
pub async fn diff(ctx: &Ctx, file: &Path, out: Output) -> Result<ExitStatus> {
    let fleet = load(file)?;
    let stop = stop_signal();
    let engine = assemble(ctx, &fleet, &stop).await?;
    let view = EventView::new(false, Plans::None, ctx.color, false);
    let result = engine
        .pass(&fleet, true, &stop, &view, Duration::ZERO)
        .await;
    engine.shutdown().await;
    let r = result?;
    match out {
        Output::Human => crate::out!("{}", render::human(&r.plan, ctx.color)),
        Output::Json => crate::outln!("{}", render::json(&r.plan)),
    }
    let failures = r.snapshot.failures();
    if !failures.is_empty() {
        return Err(Error::Unobserved {
            failures: failures.into_iter().map(|(w, e)| (w, e.clone())).collect(),
        }
        .into());
    }
    Ok(if r.plan.in_sync() {
        ExitStatus::Ok
    } else {
        ExitStatus::Changes
    })
}

pub struct ApplyArgs {
    pub dry_run: bool,
    pub wait: String,
    pub yes: bool,
    pub output: Output,
}

/// With `-o json`, stdout carries JSON lines: one per engine event, then
/// `{"event":"result",...}` and `{"event":"status",...}`.
pub async fn apply(ctx: &Ctx, file: &Path, args: ApplyArgs) -> Result<ExitStatus> {
    if args.dry_run {
        return diff(ctx, file, args.output).await;
    }
    let wait = parse_duration("wait", &args.wait)?;
    let fleet = load(file)?;
    let _lock = lock(ctx, &fleet)?;
    let stop = stop_signal();
    let engine = assemble(ctx, &fleet, &stop).await?;
    let json = args.output == Output::Json;
    let view = EventView::new(json, Plans::First, ctx.color, false).with_progress();
    let mut settings = ConvergeSettings {
        wait,
        prune_confirmed: args.yes,
    };
    let mut result = converge::converge(&engine, &fleet, settings, &stop, &view).await;
    if let Err(Error::PruneNotConfirmed { pools }) = &result {
        let q = format!(
            "This deletes every VM of a pool that left the file ({}). Continue?",
            pools.join(", ")
        );
        if confirm(&q) {
            settings.prune_confirmed = true;
            result = converge::converge(&engine, &fleet, settings, &stop, &view).await;
        }
    }
    view.finish();
    let show_status = !matches!(
        result,
        Err(Error::PruneNotConfirmed { .. } | Error::Fleet(_) | Error::Interrupted)
    );
    let result = result.map_err(ExpectedError::from);
    let code = match &result {
        Ok(_) => ExitStatus::Ok,
        Err(e) => e.process_exit_code(),
    };
    match (&result, json) {
        (Ok(c), false) => eprintln!("converged after {} pass(es)", c.passes),
        (Ok(c), true) => view.json_line(&serde_json::json!({
            "event": "result", "converged": true, "passes": c.passes, "exitCode": code.code(),
        })),
        (Err(e), true) => view.json_line(&serde_json::json!({
            "event": "result", "converged": false, "error": e.to_string(), "exitCode": code.code(),
        })),
        (Err(_), false) => {}
    }
    if show_status {
        let view_doc = engine::status::status(&engine, &fleet).await;
        if json {
            let mut doc = serde_json::to_value(&view_doc).unwrap_or_default();
            if let Some(o) = doc.as_object_mut() {
                o.insert("event".into(), "status".into());
            }
            view.json_line(&doc);
        } else {
            print_status(&view_doc, Output::Human);
        }
    }
    engine.shutdown().await;
    result.map(|_| ExitStatus::Ok)
}

pub struct ReconcileArgs {
    pub every: Option<String>,
    pub once: bool,
    pub max_passes: Option<u64>,
    pub metrics: Option<std::net::SocketAddr>,
}

/// The daemon reads the file through this, each pass.
struct FleetFile(PathBuf);

impl FleetSource for FleetFile {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }

    fn load(&self) -> std::result::Result<LoadedFleet, FleetError> {
        crate::files::fleet::load(&self.0)
    }

    /// Inode, size and mtime of each credential file: a rotation by rename
    /// or by rewrite in place changes one of them.
    fn credentials_version(&self, fleet: &LoadedFleet) -> String {
        use std::os::unix::fs::MetadataExt;
        let files = match fleet.fleet.spec.github.auth_ref() {
            Some(fleet::AuthRef::TokenFile { path }) => vec![path],
            Some(fleet::AuthRef::App {
                private_key_file, ..
            }) => vec![private_key_file],
            _ => Vec::new(),
        };
        files
            .iter()
            .map(|f| match std::fs::metadata(f) {
                Ok(m) => format!(
                    "{f}:{}:{}:{}.{}",
                    m.ino(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
                Err(e) => format!("{f}:{e}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub async fn reconcile(ctx: &Ctx, file: &Path, args: ReconcileArgs) -> Result<ExitStatus> {
    let every = match (&args.every, args.once) {
        (None, false) => {
            return Err(ExpectedError::Usage(
                "give --every DURATION (daemon) or --once (cron)".into(),
            ))
        }
        (None, true) => None,
        (Some(e), _) => match parse_duration("every", e)? {
            d if d.is_zero() => {
                return Err(ExpectedError::Usage(
                    "--every must be longer than 0s".into(),
                ))
            }
            d => Some(d),
        },
    };
    if every.is_none() && args.metrics.is_some() {
        return Err(ExpectedError::Usage(
            "--metrics is served by the daemon: give --every DURATION".into(),
        ));
    }
    let fleet = load(file)?;
    // The flag wins over the file's `spec.metrics` (validated: loopback
    // unless the file says otherwise). `--once` serves none.
    let metrics_addr = args
        .metrics
        .or_else(|| every.and(fleet.fleet.spec.metrics.as_ref())?.listen_addr());
    let stop = stop_signal();
    let view = EventView::new(false, Plans::None, ctx.color, true);
    let Some(every) = every else {
        // Once, for cron: one pass; exit 3 when it failed at anything.
        let _lock = lock(ctx, &fleet)?;
        let engine = assemble(ctx, &fleet, &stop).await?;
        let r = engine
            .pass(&fleet, false, &stop, &view, Duration::from_secs(300))
            .await;
        view.finish();
        engine.shutdown().await;
        let r = r?;
        converge::finished(&view, 1, &r);
        let failed = r.report.as_ref().is_some_and(|rep| rep.failed() > 0);
        if failed || !r.snapshot.failures().is_empty() {
            return Ok(ExitStatus::ProviderError);
        }
        return Ok(ExitStatus::Ok);
    };
    let metrics = Arc::new(Metrics::new());
    let server = match metrics_addr {
        None => None,
        Some(addr) => {
            let listener = crate::metrics::bind(addr)
                .await
                .map_err(|e| ExpectedError::Usage(format!("--metrics {addr}: {e}")))?;
            let addr = listener.local_addr().unwrap_or(addr);
            eprintln!("serving metrics on http://{addr}/metrics");
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
                stop.clone(),
            )))
        }
    };
    let engine = assemble(ctx, &fleet, &stop).await?;
    eprintln!(
        "reconciling fleet {} every ~{} (SIGTERM to stop)",
        fleet.name(),
        render::duration(every)
    );
    let settings = DaemonSettings {
        every,
        max_passes: args.max_passes,
        state_dir: ctx.state_dir.clone(),
        lock_poll: Duration::from_secs(2),
        measure: server.is_some(),
    };
    let assembly = Assembly {
        state_dir: ctx.state_dir.clone(),
        stop: stop.clone(),
    };
    let source = FleetFile(file.to_path_buf());
    let events = Both(&view, metrics.as_ref());
    let stopped =
        daemon::daemon(fleet, engine, &source, &assembly, &settings, &stop, &events).await;
    if let Some(server) = server {
        stop.cancel();
        let _ = server.await;
    }
    let stopped = stopped?;
    eprintln!("stopped after {} pass(es)", stopped.passes);
    Ok(ExitStatus::Ok)
}

pub async fn status_cmd(ctx: &Ctx, file: &Path, out: Output) -> Result<ExitStatus> {
    let fleet = load(file)?;
    let stop = stop_signal();
    let engine = assemble(ctx, &fleet, &stop).await?;
    let view = engine::status::status(&engine, &fleet).await;
    engine.shutdown().await;
    print_status(&view, out);
    Ok(if view.unobserved == 0 {
        ExitStatus::Ok
    } else {
        ExitStatus::ProviderError
    })
}

pub struct DestroyArgs {
    pub yes: bool,
    pub force: bool,
    pub wait: String,
}

pub async fn destroy(ctx: &Ctx, file: &Path, args: DestroyArgs) -> Result<ExitStatus> {
    let wait = parse_duration("wait", &args.wait)?;
    let fleet = load(file)?;
    let name = fleet.name().to_string();
    destroy::check_no_daemon(&ctx.state_dir, &name, args.force)?;
    if !args.yes
        && !confirm(&format!(
            "Destroy every VM, volume, cache and runner registration of fleet {name}?"
        ))
    {
        return Err(ExpectedError::NotConfirmed(
            "destroy needs confirmation".into(),
        ));
    }
    let _lock = lock(ctx, &fleet)?;
    let stop = stop_signal();
    let engine = assemble(ctx, &fleet, &stop).await?;
    let view = EventView::new(false, Plans::Changing, ctx.color, false);
    let settings = DestroySettings {
        force: args.force,
        wait,
        poll: Duration::from_secs(2),
        pools: fleet
            .fleet
            .spec
            .pools
            .iter()
            .map(|p| p.name.clone())
            .collect(),
    };
    let result = destroy::destroy(&engine, settings, &stop, &view).await;
    view.finish();
    engine.shutdown().await;
    result?;
    eprintln!("fleet {name} destroyed: nothing of it is left");
    Ok(ExitStatus::Ok)
}

/// `user-data` comes from the file alone; `domain` needs the host's facts
/// (its memory, for a share; where the slot lives) and says that it asks.
pub async fn render_cmd(
    ctx: &Ctx,
    what: RenderWhat,
    file: &Path,
    slot: &str,
) -> Result<ExitStatus> {
    let fleet = load(file)?;
    let pool = crate::access::slot::find(&fleet, slot)?.pool;
    if what == RenderWhat::UserData {
        crate::out!("{}", assemble::render_user_data(&fleet, pool, slot)?);
        return Ok(ExitStatus::Ok);
    }
    eprintln!("render domain: asking the hosts for their facts (memory, where {slot} lives)");
    let stop = stop_signal();
    let engine = assemble(ctx, &fleet, &stop).await?;
    let planned = engine.plan(&fleet).await;
    engine.shutdown().await;
    let (snapshot, desired, _) = planned?;
    let Some(s) = desired.slot(slot) else {
        // In the file but not placed: its host (or every allowed one) could
        // not be seen.
        return Err(Error::Unobserved {
            failures: snapshot
                .failures()
                .into_iter()
                .map(|(w, e)| (w, e.clone()))
                .collect(),
        }
        .into());
    };
    crate::out!(
        "{}",
        assemble::render(&fleet, s, true, snapshot.known_facts().get(&s.host))?
    );
    Ok(ExitStatus::Ok)
}

/// `hangar cache prune SLOT`: the guest's own cache-prune, now, through its
/// guest agent (see [`crate::access::prune`]); prints what it said.
pub async fn cache_prune(ctx: &Ctx, file: &Path, slot_name: &str) -> Result<ExitStatus> {
    use crate::access::slot;
    let fleet = load(file)?;
    let slot = slot::find(&fleet, slot_name)?;
    let configs = slot::libvirt_hosts(&slot, &fleet, &ctx.state_dir);
    if configs.is_empty() {
        return Err(crate::access::AccessError::Unavailable(format!(
            "{} runs in the sandbox, whose VMs have no guest agent to prune through",
            slot.name
        ))
        .into());
    }
    let (fleet_name, name) = (fleet.name().to_string(), slot.name.clone());
    let pruned = tokio::task::spawn_blocking(move || {
        crate::access::prune::prune(&configs, &fleet_name, &name)
    })
    .await
    .map_err(|e| ExpectedError::Usage(format!("cache prune: {e}")))??;
    let said = format!("{}{}", pruned.run.stdout, pruned.run.stderr);
    crate::out!("{said}");
    if pruned.run.exit_code != 0 {
        return Err(crate::access::AccessError::Unavailable(format!(
            "the cache prune of {} (generation {}) on host {} exited with {}",
            slot.name, pruned.generation, pruned.host, pruned.run.exit_code
        ))
        .into());
    }
    crate::outln!(
        "pruned the cache of {} (generation {}) on host {}",
        slot.name,
        pruned.generation,
        pruned.host
    );
    Ok(ExitStatus::Ok)
}
