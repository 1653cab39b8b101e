//! One function per subcommand. Each turns flags into settings, calls the
//! library, prints, and returns the exit status.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::args::{Output, RenderWhat};
use super::output::{self, ProgressView};
use super::status;
use crate::assemble::{self, Assembled};
use crate::exit::ExitStatus;
use crate::fleet::{self, LoadedFleet};
use crate::plan::model::{Action, DeleteReason, Plan};
use crate::plan::{self, render};
use crate::reconcile::engine::{jittered, PassError, PassResult};
use crate::reconcile::lock::{FleetLock, LockError};

/// The value of a `Result<T, ExitStatus>`, or return the exit status.
macro_rules! or_exit {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}

/// Settings shared by every command.
pub struct Ctx {
    pub state_dir: PathBuf,
    pub color: bool,
}

fn load(ctx: &Ctx, path: &Path) -> Result<LoadedFleet, ExitStatus> {
    crate::files::fleet::load(path).map_err(|e| {
        eprint!("{}", output::diagnostic(&e, ctx.color));
        ExitStatus::InvalidInput
    })
}

fn parse_duration(flag: &str, value: &str) -> Result<Duration, ExitStatus> {
    value
        .parse::<fleet::units::Duration>()
        .map(|d| d.std())
        .map_err(|e| {
            eprintln!("error: --{flag} {value:?}: {e}");
            ExitStatus::InvalidInput
        })
}

async fn assemble(ctx: &Ctx, fleet: &LoadedFleet) -> Result<Assembled, ExitStatus> {
    assemble::assemble(fleet, &ctx.state_dir)
        .await
        .map_err(|e| {
            eprintln!("error: {e}");
            e.exit_status()
        })
}

fn lock(ctx: &Ctx, fleet: &LoadedFleet) -> Result<FleetLock, ExitStatus> {
    FleetLock::try_acquire(&ctx.state_dir, &fleet.fleet.metadata.name).map_err(|e| {
        eprintln!("error: {e}");
        match e {
            LockError::Held { .. } => ExitStatus::LockHeld,
            LockError::Io { .. } => ExitStatus::ProviderError,
        }
    })
}

fn pass_error(e: PassError, ctx: &Ctx) -> ExitStatus {
    match e {
        PassError::Spec(e) => {
            eprint!("{}", output::diagnostic(&e, ctx.color));
            ExitStatus::InvalidInput
        }
    }
}

fn print_observation_failures(r: &PassResult) -> bool {
    let failures = r.snapshot.failures();
    for f in &failures {
        eprintln!("warning: could not observe {f}; nothing destructive is planned there");
    }
    !failures.is_empty()
}

fn print_plan(plan: &Plan, output: Output, color: bool) {
    match output {
        Output::Human => crate::out!("{}", render::human(plan, color)),
        Output::Json => crate::outln!("{}", render::json(plan)),
    }
}

pub fn validate(ctx: &Ctx, file: &Path, out: Output) -> ExitStatus {
    let fleet = or_exit!(load(ctx, file));
    let f = &fleet.fleet;
    let slots: u32 = f.spec.pools.iter().map(|p| p.count).sum();
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
    ExitStatus::Ok
}

pub async fn diff(ctx: &Ctx, file: &Path, out: Output) -> ExitStatus {
    let fleet = or_exit!(load(ctx, file));
    let a = or_exit!(assemble(ctx, &fleet).await);
    let cancel = CancellationToken::new();
    let result = a
        .engine
        .pass(&fleet, true, &cancel, &|_| {}, Duration::ZERO)
        .await;
    a.shutdown().await;
    let r = match result {
        Ok(r) => r,
        Err(e) => return pass_error(e, ctx),
    };
    print_plan(&r.plan, out, ctx.color);
    if print_observation_failures(&r) {
        ExitStatus::ProviderError
    } else if r.plan.is_converged() {
        ExitStatus::Ok
    } else {
        ExitStatus::Changes
    }
}

/// Pools whose every VM the plan deletes because the pool left the file.
fn pruned_pools(plan: &Plan) -> Vec<String> {
    let mut pools: Vec<String> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete {
                vm,
                reason: DeleteReason::PoolRemoved,
                ..
            } => Some(vm.name.clone()),
            _ => None,
        })
        .collect();
    pools.sort();
    pools
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

pub struct ApplyArgs {
    pub dry_run: bool,
    pub wait: String,
    pub yes: bool,
    pub output: Output,
}

pub async fn apply(ctx: &Ctx, file: &Path, args: ApplyArgs) -> ExitStatus {
    if args.dry_run {
        return diff(ctx, file, args.output).await;
    }
    let wait = or_exit!(parse_duration("wait", &args.wait));
    let fleet = or_exit!(load(ctx, file));
    let _lock = or_exit!(lock(ctx, &fleet));
    let a = or_exit!(assemble(ctx, &fleet).await);
    let code = apply_passes(ctx, &fleet, &a, &args, wait).await;
    if code != ExitStatus::InvalidInput {
        status::print(ctx, &fleet, &a, args.output).await;
    }
    a.shutdown().await;
    code
}

async fn apply_passes(
    ctx: &Ctx,
    fleet: &LoadedFleet,
    a: &Assembled,
    args: &ApplyArgs,
    wait: Duration,
) -> ExitStatus {
    let cancel = shutdown_signal();
    let deadline = tokio::time::Instant::now() + wait;

    // The first look decides what this apply means; ask before pruning pools.
    let first = match a.engine.plan(fleet).await {
        Ok((_, _, plan)) => plan,
        Err(e) => return pass_error(e, ctx),
    };
    let pruned = pruned_pools(&first);
    if !pruned.is_empty() && !args.yes {
        let q = format!(
            "This removes every VM of a pool that left the file ({}). Continue?",
            pruned.join(", ")
        );
        if !confirm(&q) {
            eprintln!(
                "error: refusing to delete the VMs of removed pools without confirmation; \
                 run again with --yes"
            );
            return ExitStatus::InvalidInput;
        }
    }
    if args.output == Output::Human {
        crate::out!("{}", render::human(&first, ctx.color));
    }

    let mut pass_no = 0u32;
    loop {
        pass_no += 1;
        let view = ProgressView::new(0);
        let result = a
            .engine
            .pass(
                fleet,
                false,
                &cancel,
                &|p| view.event(p),
                Duration::from_secs(10),
            )
            .await;
        view.finish();
        let r = match result {
            Ok(r) => r,
            Err(e) => return pass_error(e, ctx),
        };
        for line in &r.guest_play {
            eprintln!("  sandbox  {line}");
        }
        print_observation_failures(&r);
        if args.output == Output::Json && pass_no == 1 {
            crate::outln!("{}", render::json(&r.plan));
        }
        if cancel.is_cancelled() {
            eprintln!("interrupted: the actions under way finished; run apply again to go on");
            return ExitStatus::ProviderError;
        }
        if r.converged() {
            eprintln!("converged after {pass_no} pass(es)");
            return ExitStatus::Ok;
        }
        // A pass that changed nothing and failed at something will fail the
        // same way again: say so now instead of looping until the wait ends.
        if let Some(rep) = &r.report {
            if rep.done() == 0
                && rep.failed() > 0
                && rep.failures().all(|f| {
                    matches!(
                        f.outcome,
                        crate::reconcile::execute::Outcome::Failed {
                            retryable: false,
                            ..
                        }
                    )
                })
            {
                eprintln!(
                    "error: {} action(s) failed and none succeeded; fix the cause and run apply again",
                    rep.failed()
                );
                return ExitStatus::ProviderError;
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let left = r.plan.actions.len();
            eprintln!(
                "error: not converged within {}: {left} action(s) or wait(s) remain; \
                 `hangar diff` shows them",
                humantime(wait)
            );
            return ExitStatus::ProviderError;
        }
        // Sandbox guests act at once; real ones take a minute to boot.
        let poll = if a.simulated_hosts.len() == a.engine.world.hosts.len() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(5)
        };
        let nap = r.requeue.min(poll).min(deadline - now);
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = cancel.cancelled() => {}
        }
    }
}

fn humantime(d: Duration) -> String {
    output::age(chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX))
}

/// Cancelled on SIGTERM or Ctrl-C: actions under way finish, no new ones
/// start.
fn shutdown_signal() -> CancellationToken {
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
        tracing::info!("shutdown requested: finishing the actions under way");
        t.cancel();
    });
    token
}

pub struct ReconcileArgs {
    pub every: Option<String>,
    pub once: bool,
    pub max_passes: Option<u64>,
}

pub async fn reconcile(ctx: &Ctx, file: &Path, args: ReconcileArgs) -> ExitStatus {
    if args.once || args.every.is_none() {
        if !args.once {
            eprintln!("error: give --every DURATION (daemon) or --once (cron)");
            return ExitStatus::InvalidInput;
        }
        let fleet = or_exit!(load(ctx, file));
        let _lock = or_exit!(lock(ctx, &fleet));
        let a = or_exit!(assemble(ctx, &fleet).await);
        let cancel = shutdown_signal();
        let r = a
            .engine
            .pass(&fleet, false, &cancel, &|_| {}, Duration::from_secs(300))
            .await;
        a.shutdown().await;
        return match r {
            Ok(r) => {
                log_pass(&r);
                if r.report.as_ref().is_some_and(|rep| rep.failed() > 0)
                    || !r.snapshot.failures().is_empty()
                {
                    ExitStatus::ProviderError
                } else {
                    ExitStatus::Ok
                }
            }
            Err(e) => pass_error(e, ctx),
        };
    }
    let every = match parse_duration("every", args.every.as_deref().unwrap_or_default()) {
        Ok(d) if !d.is_zero() => d,
        Ok(_) => {
            eprintln!("error: --every must be longer than 0s");
            return ExitStatus::InvalidInput;
        }
        Err(code) => return code,
    };
    daemon(ctx, file, every, args.max_passes).await
}

fn log_pass(r: &PassResult) {
    let (done, failed) = r
        .report
        .as_ref()
        .map(|rep| (rep.done(), rep.failed()))
        .unwrap_or((0, 0));
    let waits = r.plan.actions.iter().filter(|a| !a.is_mutating()).count();
    tracing::info!(
        planned = r.plan.mutating().count(),
        done,
        failed,
        waits,
        next_in_s = r.requeue.as_secs(),
        "pass finished"
    );
    eprintln!(
        "pass: {} planned, {done} done, {failed} failed, {waits} waiting; next pass in {}s",
        r.plan.mutating().count(),
        r.requeue.as_secs()
    );
    if let Some(rep) = &r.report {
        for f in rep.failures() {
            if let crate::reconcile::execute::Outcome::Failed { error, .. } = &f.outcome {
                eprintln!(
                    "  failed {} {}: {error}",
                    output::verb(&f.action),
                    f.action.subject()
                );
            }
        }
    }
    for line in &r.guest_play {
        eprintln!("  sandbox  {line}");
    }
}

/// The daemon: re-read the file each pass (keeping the last good one when an
/// edit is bad), wait for the lock, pass, sleep a jittered interval (sooner
/// while something is in progress), until SIGTERM.
async fn daemon(ctx: &Ctx, file: &Path, every: Duration, max_passes: Option<u64>) -> ExitStatus {
    let mut last_good = or_exit!(load(ctx, file));
    let mut assembled = or_exit!(assemble(ctx, &last_good).await);
    let cancel = shutdown_signal();
    let mut passes = 0u64;
    eprintln!(
        "reconciling fleet {} every ~{} (SIGTERM to stop)",
        last_good.fleet.metadata.name,
        humantime(every)
    );
    loop {
        match crate::files::fleet::load(file) {
            Ok(f) => {
                if f.fleet != last_good.fleet {
                    eprintln!("{}: changed; using the new file", file.display());
                    match assemble::assemble(&f, &ctx.state_dir).await {
                        Ok(a) => {
                            assembled.shutdown().await;
                            assembled = a;
                            last_good = f;
                        }
                        Err(e) => eprintln!("error: {e}; keeping the last good file"),
                    }
                }
            }
            Err(e) => {
                eprint!("{}", output::diagnostic(&e, ctx.color));
                eprintln!("the last good version of the file stays in use");
            }
        }
        let lock = tokio::select! {
            l = FleetLock::acquire_waiting(&ctx.state_dir, &last_good.fleet.metadata.name, Duration::from_secs(2)) => l,
            _ = cancel.cancelled() => break,
        };
        let lock = match lock {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                assembled.shutdown().await;
                return ExitStatus::ProviderError;
            }
        };
        let next = match assembled
            .engine
            .pass(&last_good, false, &cancel, &|_| {}, every)
            .await
        {
            Ok(r) => {
                log_pass(&r);
                r.requeue
            }
            Err(e) => {
                pass_error(e, ctx);
                every
            }
        };
        drop(lock);
        passes += 1;
        if cancel.is_cancelled() || max_passes.is_some_and(|m| passes >= m) {
            break;
        }
        let nap = if next < every { next } else { jittered(every) };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = cancel.cancelled() => break,
        }
    }
    assembled.shutdown().await;
    eprintln!("stopped after {passes} pass(es)");
    ExitStatus::Ok
}

pub async fn status_cmd(ctx: &Ctx, file: &Path, out: Output) -> ExitStatus {
    let fleet = or_exit!(load(ctx, file));
    let a = or_exit!(assemble(ctx, &fleet).await);
    let code = status::print(ctx, &fleet, &a, out).await;
    a.shutdown().await;
    code
}

pub struct DestroyArgs {
    pub yes: bool,
    pub force: bool,
    pub wait: String,
}

pub async fn destroy(ctx: &Ctx, file: &Path, args: DestroyArgs) -> ExitStatus {
    let wait = or_exit!(parse_duration("wait", &args.wait));
    let fleet = or_exit!(load(ctx, file));
    let name = fleet.fleet.metadata.name.clone();
    if !args.yes
        && !confirm(&format!(
            "Destroy every VM, volume, cache and runner registration of fleet {name}?"
        ))
    {
        eprintln!("error: destroy needs confirmation; run again with --yes");
        return ExitStatus::InvalidInput;
    }
    let _lock = or_exit!(lock(ctx, &fleet));
    let a = or_exit!(assemble(ctx, &fleet).await);
    let cancel = shutdown_signal();
    let deadline = tokio::time::Instant::now() + wait;
    let code = loop {
        let snap = a.engine.world.observe(a.engine.clock.as_ref()).await;
        let plan = plan::destroy(&name, &snap.observed, args.force);
        if plan.actions.is_empty() {
            eprintln!("fleet {name} destroyed: nothing of it is left");
            break ExitStatus::Ok;
        }
        if !snap.failures().is_empty() && plan.is_converged() {
            for f in snap.failures() {
                eprintln!("error: could not observe {f}");
            }
            break ExitStatus::ProviderError;
        }
        crate::out!("{}", render::human(&plan, ctx.color));
        let resolved = match fleet.resolve(&snap.known_facts(), &snap.placement()) {
            Ok(d) => d,
            Err(e) => {
                eprint!("{}", output::diagnostic(&e, ctx.color));
                break ExitStatus::InvalidInput;
            }
        };
        let view = ProgressView::new(plan.mutating().count());
        let ex = crate::reconcile::execute::Execution {
            world: &a.engine.world,
            desired: &resolved,
            observed: &snap.observed,
            provisioner: a.engine.provisioner.as_ref(),
            clock: a.engine.clock.as_ref(),
            limits: a.engine.limits,
            cancel: cancel.clone(),
            progress: &|p| view.event(p),
        };
        crate::reconcile::execute(&ex, &plan).await;
        view.finish();
        if cancel.is_cancelled() {
            break ExitStatus::ProviderError;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            eprintln!(
                "error: busy runners did not finish within {}; run destroy again, \
                 or with --force",
                humantime(wait)
            );
            break ExitStatus::ProviderError;
        }
        tokio::time::sleep(Duration::from_secs(2).min(deadline - now)).await;
    };
    a.shutdown().await;
    code
}

pub async fn render_cmd(ctx: &Ctx, what: RenderWhat, file: &Path, slot: &str) -> ExitStatus {
    let fleet = or_exit!(load(ctx, file));
    let a = or_exit!(assemble(ctx, &fleet).await);
    let snap = a.engine.world.observe(a.engine.clock.as_ref()).await;
    a.shutdown().await;
    let desired = match fleet.resolve(&snap.known_facts(), &snap.placement()) {
        Ok(d) => d,
        Err(e) => {
            eprint!("{}", output::diagnostic(&e, ctx.color));
            return ExitStatus::InvalidInput;
        }
    };
    let Some(s) = desired.slot(slot) else {
        eprintln!(
            "error: no slot {slot} in fleet {}; slots: {}",
            desired.fleet,
            desired
                .slots
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitStatus::InvalidInput;
    };
    match assemble::render(&fleet, s, what == RenderWhat::Domain) {
        Ok(text) => {
            crate::out!("{text}");
            ExitStatus::Ok
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitStatus::InvalidInput
        }
    }
}
