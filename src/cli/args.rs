//! Command-line arguments (clap derive). Raw flags only; `cli::run` turns
//! them into validated settings before anything is contacted.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keep self-hosted GitHub Actions runners, one per isolated libvirt VM,
/// equal to a fleet file.
///
/// Exit codes: 0 ok (diff: in sync), 1 diff found a difference (waits
/// included), 2 invalid input or usage, 3 a provider (libvirt, GitHub)
/// failed, 4 another run holds the fleet's lock (destroy: a daemon runs it),
/// 5 apply/destroy stopped before the world equals the file (--wait ran out,
/// or only waits on others remain), 6 interrupted (SIGTERM, Ctrl-C).
#[derive(Debug, Parser)]
#[command(name = "hangar", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Directory for locks and the sandbox's state [default: /var/lib/hangar
    /// as root, else $XDG_STATE_HOME/hangar or ~/.local/state/hangar]
    #[arg(long, global = true, env = "HANGAR_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Log verbosity: -v info, -vv debug, -vvv trace (logs go to stderr;
    /// RUST_LOG overrides)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log line format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// When to use colour
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct FleetFile {
    /// The fleet file
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and check a fleet file; contacts nothing
    Validate {
        #[command(flatten)]
        fleet: FleetFile,
        #[arg(short, long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Print the JSON Schema of the fleet file, or write it into a directory
    Schema {
        /// Write `fleet.schema.json` into DIR (next to a fleet file whose
        /// modeline names it) instead of printing it
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write a fleet file for this machine from its local libvirt (cpus,
    /// memory, storage pools, KVM or not), the schema next to it, and
    /// validate it
    Init {
        /// The local libvirt to ask
        #[arg(long, default_value = "qemu:///system")]
        uri: String,
        /// Where to write the fleet file
        #[arg(long, short = 'o', value_name = "FILE", default_value = "fleet.yaml")]
        out: PathBuf,
        /// The fleet's name (metadata.name)
        #[arg(long, default_value = "my-fleet")]
        name: String,
        /// Replace FILE if it exists
        #[arg(long)]
        force: bool,
    },
    /// Observe the world and print the plan; changes nothing.
    /// Exit 0 in sync, 1 anything differs (waits included), 2 bad input,
    /// 3 provider error
    Diff {
        #[command(flatten)]
        fleet: FleetFile,
        #[arg(short, long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Converge the world to the file, then wait until runners are up.
    /// Exit 5 when --wait ends first, 6 when interrupted; -o json prints
    /// JSON lines (one per event, then the result and the status)
    Apply {
        #[command(flatten)]
        fleet: FleetFile,
        /// Print the plan and stop (same as `diff`)
        #[arg(long)]
        dry_run: bool,
        /// How long to keep passing until converged (e.g. 90s, 10m; 0 = one pass)
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        wait: String,
        /// Do not ask before deleting a whole pool's VMs
        #[arg(long, short = 'y')]
        yes: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Keep the world converged: a pass every interval (daemon) or once (cron)
    Reconcile {
        #[command(flatten)]
        fleet: FleetFile,
        /// Interval between passes (jittered), e.g. 2m
        #[arg(long, value_name = "DURATION", conflicts_with = "once")]
        every: Option<String>,
        /// One pass, for cron or a systemd timer
        #[arg(long)]
        once: bool,
        /// Stop after this many passes (daemon mode; for tests and soak runs)
        #[arg(long, value_name = "N", hide = true)]
        max_passes: Option<u64>,
        /// Serve Prometheus metrics at http://ADDR/metrics (daemon mode);
        /// `--metrics` alone listens on 127.0.0.1:9464
        #[arg(
            long,
            value_name = "ADDR",
            num_args = 0..=1,
            default_missing_value = crate::metrics::DEFAULT_LISTEN
        )]
        metrics: Option<SocketAddr>,
    },
    /// Hosts, VMs, runners and cache use in one table
    Status {
        #[command(flatten)]
        fleet: FleetFile,
        #[arg(short, long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// Print a slot's serial console log (what its guest printed), read on
    /// this machine; `--follow` keeps printing, across new generations
    Logs {
        /// Slot name, e.g. ldmx-umn-umn-0
        slot: String,
        #[command(flatten)]
        fleet: FleetFile,
        /// Keep printing what the guest prints (Ctrl-C to stop); on a remote
        /// host, stream its live console over libvirt
        #[arg(long, short = 'F')]
        follow: bool,
        /// The log of this VM generation instead of the newest
        #[arg(long, value_name = "N")]
        generation: Option<u64>,
    },
    /// Attach to a slot's serial console (as `virsh console` does);
    /// Ctrl-] detaches
    Console {
        /// Slot name, e.g. ldmx-umn-umn-0
        slot: String,
        #[command(flatten)]
        fleet: FleetFile,
        /// Take the console over from another client attached to it
        #[arg(long)]
        force: bool,
    },
    /// A slot's cache disk
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Remove everything the fleet owns (registrations, VMs, volumes, caches)
    Destroy {
        #[command(flatten)]
        fleet: FleetFile,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
        /// Also delete VMs whose runner is running a job, and go ahead while
        /// a daemon reconciles the fleet
        #[arg(long)]
        force: bool,
        /// How long to wait for busy runners to finish
        #[arg(long, value_name = "DURATION", default_value = "30m")]
        wait: String,
    },
    /// Print what hangar would hand cloud-init or libvirt for a slot
    /// (secrets replaced by placeholders)
    Render {
        #[arg(value_enum)]
        what: RenderWhat,
        #[command(flatten)]
        fleet: FleetFile,
        /// Slot name, e.g. ldmx-umn-umn-0
        #[arg(long)]
        slot: String,
    },
    /// Serve the GitHub runner API simulator (tests and demos)
    GithubSim {
        /// Address to listen on (loopback)
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
        /// Persist the simulator's state in this JSON file
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Token clients must present (`Authorization: Bearer T`)
        #[arg(long, env = "HANGAR_SIM_TOKEN", hide_env_values = true)]
        token: String,
        /// Serve GitHub App authentication for this App id (with
        /// `--app-installation-id` and `--app-public-key`)
        #[arg(long, requires_all = ["app_installation_id", "app_public_key"])]
        app_id: Option<u64>,
        /// The App's one installation: installation tokens are minted for it
        #[arg(long, requires = "app_id")]
        app_installation_id: Option<u64>,
        /// PEM file of the App's RSA public key: JWTs must be signed with its
        /// private half
        #[arg(long, value_name = "FILE", requires = "app_id")]
        app_public_key: Option<PathBuf>,
    },
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), for packaging
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Prune the slot's cache disk now, as the guest does at each job start
    /// (through its qemu guest agent), and print what the prune said
    Prune {
        /// Slot name, e.g. ldmx-umn-umn-0
        slot: String,
        #[command(flatten)]
        fleet: FleetFile,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RenderWhat {
    /// cloud-init user-data (`#cloud-config`)
    UserData,
    /// libvirt domain XML
    Domain,
}
