//! The reliability suite (issue 8): faults, crashes, concurrency and abuse,
//! each scenario asserting the world afterwards. Needs the fault points:
//!
//!     cargo test --features failpoints --test reliability -- --test-threads=2
//!
//! Without the feature this test target is empty. A complete passing run
//! writes `docs/reliability.md` (see `reliability/results.rs`).

#![cfg(feature = "failpoints")]

#[path = "reliability/binary.rs"]
mod binary;
#[path = "reliability/cli.rs"]
mod cli;
#[path = "reliability/faults.rs"]
mod faults;
#[path = "reliability/input.rs"]
mod input;
#[path = "reliability/inspect.rs"]
mod inspect;
#[path = "kit/host.rs"]
mod kit;
#[path = "reliability/libvirtd.rs"]
mod libvirtd;
#[path = "support/ports.rs"]
mod ports;
#[path = "reliability/results.rs"]
mod results;
#[path = "reliability/rig.rs"]
mod rig;
#[path = "reliability/secrets.rs"]
mod secrets;
#[path = "reliability/soak.rs"]
mod soak;
#[path = "support/wiring.rs"]
mod wiring;
