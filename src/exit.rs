//! The process exit codes, a documented contract for scripts and cron.

/// Exit codes of the `hangar` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// Success; for `diff`, the world equals the file.
    Ok = 0,
    /// `diff` found changes to make.
    Changes = 1,
    /// Invalid input or usage: nothing was contacted or changed.
    InvalidInput = 2,
    /// A provider (libvirt, GitHub) refused or failed.
    ProviderError = 3,
    /// Another run holds this fleet's lock, or (`destroy`) a daemon
    /// reconciles the fleet.
    LockHeld = 4,
    /// `apply` or `destroy` stopped before the world equals the file:
    /// `--wait` ran out, or only waits on others remain (a busy runner, a
    /// name another owner holds). What remains is printed.
    NotConverged = 5,
    /// Stopped by SIGTERM or Ctrl-C: no other action started; the ones
    /// under way finished or were abandoned after the stop grace (10 s), or
    /// a second signal ended the process at once.
    Interrupted = 6,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(s.code())
    }
}
