//! hangar keeps a fleet of self-hosted GitHub Actions runners, one runner per
//! isolated libvirt VM, equal to a desired state written in YAML.
//!
//! Data flow of one pass: `fleet` (load, validate, resolve) → `providers`
//! (observe libvirt hosts and GitHub) → `plan` (pure) → `reconcile` (execute).
//! `model` is the vocabulary all of them share; `fleet`, `plan` and `model`
//! are pure (`tests/layering.rs` keeps them so).

pub mod access;
pub mod assemble;
pub mod cli;
pub mod exit;
pub mod files;
pub mod fleet;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod providers;
pub mod provision;
pub mod reconcile;
pub mod runner_dist;
pub mod sandbox;
pub mod secret;
pub mod sim;
