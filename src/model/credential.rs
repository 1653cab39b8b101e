//! What a guest needs to register its runner.

use crate::secret::Secret;

/// What the guest needs to register its runner; minted just before the VM
/// that uses it is created and never reused for another boot.
#[derive(Debug, Clone)]
pub enum RunnerCredential {
    /// Ephemeral slot: `run.sh --jitconfig`.
    Jit {
        runner_id: u64,
        config: Secret<String>,
    },
    /// Persistent slot: `config.sh --url URL --token TOKEN`.
    Registration { url: String, token: Secret<String> },
}
