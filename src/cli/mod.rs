//! Command-line interface: argument parsing and output formatting. It turns
//! flags into settings, calls the library, prints, and maps every ending to
//! its documented exit code in one place ([`error::ExpectedError`]); it
//! decides nothing about the world and runs no loop of passes.

pub(crate) mod args;
mod commands;
pub(crate) mod error;
pub mod output;
mod status;

use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

use crate::exit::ExitStatus;
use args::{Cli, Command, LogFormat};
use commands::Ctx;

/// Parse the process's arguments and run the command.
pub fn main() -> ExitStatus {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitStatus::InvalidInput
            } else {
                ExitStatus::Ok
            };
        }
    };
    init_logging(cli.global.verbose, cli.global.log_format);
    // Test builds only: fault points configured by `FAILPOINTS=name=action`.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return finish(Err(error::ExpectedError::Runtime(e)), false),
    };
    runtime.block_on(run(cli))
}

fn default_state_dir() -> PathBuf {
    // SAFETY-free check of root: the effective uid via libc.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/hangar");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("hangar");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/hangar"),
        None => PathBuf::from(".hangar"),
    }
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "hangar=info,warn",
        2 => "hangar=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Print an ending that is not a success, and give its exit code.
fn finish(result: Result<ExitStatus, error::ExpectedError>, color: bool) -> ExitStatus {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprint!("{}", e.display(color));
            e.process_exit_code()
        }
    }
}

/// Run one parsed command line.
pub async fn run(cli: Cli) -> ExitStatus {
    virt::error::clear_error_callback();
    let ctx = Ctx {
        state_dir: cli
            .global
            .state_dir
            .clone()
            .unwrap_or_else(default_state_dir),
        color: output::use_color(cli.global.color),
    };
    let result = match cli.command {
        Command::Validate { fleet, output } => commands::validate(&fleet.file, output),
        Command::Schema => {
            crate::out!("{}", crate::fleet::schema_json());
            Ok(ExitStatus::Ok)
        }
        Command::Diff { fleet, output } => commands::diff(&ctx, &fleet.file, output).await,
        Command::Apply {
            fleet,
            dry_run,
            wait,
            yes,
            output,
        } => {
            commands::apply(
                &ctx,
                &fleet.file,
                commands::ApplyArgs {
                    dry_run,
                    wait,
                    yes,
                    output,
                },
            )
            .await
        }
        Command::Reconcile {
            fleet,
            every,
            once,
            max_passes,
        } => {
            commands::reconcile(
                &ctx,
                &fleet.file,
                commands::ReconcileArgs {
                    every,
                    once,
                    max_passes,
                },
            )
            .await
        }
        Command::Status { fleet, output } => commands::status_cmd(&ctx, &fleet.file, output).await,
        Command::Destroy {
            fleet,
            yes,
            force,
            wait,
        } => {
            commands::destroy(
                &ctx,
                &fleet.file,
                commands::DestroyArgs { yes, force, wait },
            )
            .await
        }
        Command::Render { what, fleet, slot } => {
            commands::render_cmd(&ctx, what, &fleet.file, &slot).await
        }
        Command::GithubSim {
            listen,
            state,
            token,
        } => Ok(github_sim(listen, state, token).await),
        Command::Completions { shell } => {
            // Into a buffer, then out through the pipe-tolerant writer:
            // `hangar completions bash | head` must not panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hangar", &mut script);
            output::write_stdout(&String::from_utf8_lossy(&script));
            Ok(ExitStatus::Ok)
        }
    };
    finish(result, ctx.color)
}

async fn github_sim(
    listen: std::net::SocketAddr,
    state: Option<PathBuf>,
    token: String,
) -> ExitStatus {
    if !listen.ip().is_loopback() {
        eprintln!("error: --listen {listen}: the simulator serves loopback addresses only");
        return ExitStatus::InvalidInput;
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitStatus::ProviderError;
        }
    };
    let mut config = crate::sim::SimConfig::new(token);
    config.state_file = state;
    eprintln!("github simulator listening on http://{listen}");
    tokio::select! {
        r = crate::sim::serve(listener, config) => match r {
            Ok(()) => ExitStatus::Ok,
            Err(e) => {
                eprintln!("error: simulator: {e}");
                ExitStatus::ProviderError
            }
        },
        _ = tokio::signal::ctrl_c() => ExitStatus::Ok,
    }
}
