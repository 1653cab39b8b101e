//! Command-line interface: argument parsing and output formatting. It turns
//! flags into settings, calls the library, prints, and maps every ending to
//! its documented exit code in one place ([`error::ExpectedError`]); it
//! decides nothing about the world and runs no loop of passes.

pub(crate) mod args;
mod commands;
mod console;
pub(crate) mod error;
mod init;
mod logs;
pub mod output;
mod progress;
mod status;

use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use crate::exit::ExitStatus;
use args::{Cli, Command, LogFormat};
use commands::Ctx;

/// Parse the process's arguments and run the command.
pub fn main() -> ExitStatus {
    crate::logging::disable_core_dumps();
    // Before any thread starts (see `malloc`).
    crate::malloc::limit_arenas();
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
    init_logging(
        cli.global.verbose,
        cli.global.log_format,
        output::use_color_on_stderr(cli.global.color),
    );
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
    let status = runtime.block_on(run(cli));
    // A libvirt call that never returned still holds its blocking thread
    // (see providers::libvirt::connection): the process does not wait for
    // it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    status
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

/// Logs go to stderr, redacted: escapes only where stderr is a terminal
/// that wants colour (never into a cron mail or the journal).
fn init_logging(verbose: u8, format: LogFormat, ansi: bool) {
    crate::logging::init(verbose, matches!(format, LogFormat::Json), ansi);
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
    let ctx = Ctx {
        state_dir: cli
            .global
            .state_dir
            .clone()
            .unwrap_or_else(default_state_dir),
        color: output::use_color(cli.global.color),
    };
    let stderr_color = output::use_color_on_stderr(cli.global.color);
    let result = match cli.command {
        Command::Validate { fleet, output } => commands::validate(&fleet.file, output),
        Command::Schema { out: None } => {
            crate::out!("{}", crate::fleet::schema_json());
            Ok(ExitStatus::Ok)
        }
        Command::Schema { out: Some(dir) } => init::write_schema(&dir).map(|p| {
            eprintln!("wrote {}", p.display());
            ExitStatus::Ok
        }),
        Command::Init {
            uri,
            out,
            name,
            force,
        } => {
            init::init(init::InitArgs {
                uri,
                out,
                name,
                force,
            })
            .await
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
            metrics,
        } => {
            commands::reconcile(
                &ctx,
                &fleet.file,
                commands::ReconcileArgs {
                    every,
                    once,
                    max_passes,
                    metrics,
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
        Command::Logs {
            slot,
            fleet,
            follow,
            generation,
        } => {
            logs::logs(
                &ctx,
                &fleet.file,
                logs::LogsArgs {
                    slot,
                    follow,
                    generation,
                },
            )
            .await
        }
        Command::Cache {
            command: args::CacheCommand::Prune { slot, fleet },
        } => commands::cache_prune(&ctx, &fleet.file, &slot).await,
        Command::Console { slot, fleet, force } => {
            console::console(&ctx, &fleet.file, console::ConsoleArgs { slot, force }).await
        }
        Command::Render { what, fleet, slot } => {
            commands::render_cmd(&ctx, what, &fleet.file, &slot).await
        }
        Command::GithubSim {
            listen,
            state,
            token,
            app_id,
            app_installation_id,
            app_public_key,
        } => {
            let app = match (app_id, app_installation_id, app_public_key) {
                (Some(app_id), Some(installation_id), Some(key)) => {
                    match std::fs::read_to_string(&key) {
                        Ok(public_key_pem) => Some(crate::sim::SimApp {
                            app_id,
                            installation_id,
                            public_key_pem,
                        }),
                        Err(e) => {
                            eprintln!("error: --app-public-key {}: {e}", key.display());
                            return finish(Ok(ExitStatus::InvalidInput), ctx.color);
                        }
                    }
                }
                _ => None,
            };
            Ok(github_sim(listen, state, token, app).await)
        }
        Command::Completions { shell } => {
            // Into a buffer, then out through the pipe-tolerant writer:
            // `hangar completions bash | head` must not panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hangar", &mut script);
            output::write_stdout(&String::from_utf8_lossy(&script));
            Ok(ExitStatus::Ok)
        }
        Command::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => {
                    output::write_stdout(&String::from_utf8_lossy(&page));
                    Ok(ExitStatus::Ok)
                }
                Err(e) => Err(error::ExpectedError::Usage(format!("man page: {e}"))),
            }
        }
    };
    finish(result, stderr_color)
}

async fn github_sim(
    listen: std::net::SocketAddr,
    state: Option<PathBuf>,
    token: String,
    app: Option<crate::sim::SimApp>,
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
    if let Some(app) = &app {
        if jsonwebtoken::DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes()).is_err() {
            eprintln!("error: --app-public-key: not a PEM RSA public key");
            return ExitStatus::InvalidInput;
        }
        eprintln!(
            "github simulator: App {} with installation {}",
            app.app_id, app.installation_id
        );
    }
    config.app = app;
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
