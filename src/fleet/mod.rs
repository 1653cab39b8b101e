//! The fleet file: types, loading with located errors, validation, resolution.
//!
//! `load_bytes` turns a file's bytes into a [`LoadedFleet`] (parse, then
//! `validate`, which reports every problem at once); [`LoadedFleet::resolve`]
//! turns it and the hosts' facts into the planner's `Desired`. Nothing here
//! does I/O: `crate::files::fleet` reads the file.

mod de;
pub mod error;
mod load;
pub mod node;
mod resolve;
mod same_daemon;
pub mod trust;
pub mod types;
pub mod units;
pub mod validate;

pub use error::{FleetError, Problem};
pub use load::{load_bytes, load_str, too_large, LoadedFleet, MAX_FILE_BYTES};
pub use resolve::{runner_labels, scaled_pools, spec_hash};
pub use types::*;

/// Where the daemon serves metrics unless told otherwise (loopback).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
pub use units::{ByteSize, Duration, MemorySpec, Percent};

/// The JSON Schema (2020-12) of the fleet file, pretty-printed, ending in a
/// newline; `schemas/fleet.schema.json` is the committed copy.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Fleet);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_example_loads() {
        let text = include_str!("../../examples/ldmx-umn.yaml");
        let f = load_str("ldmx-umn.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.name(), "ldmx-umn");
        let pool = f.pool("umn").unwrap();
        assert_eq!(pool.count, 4);
        assert_eq!(pool.vm.memory, "18%".parse().unwrap());
        assert_eq!(pool.runner_group, "Default");
        assert_eq!(f.host("umn-node").unwrap().storage_pool, "default");
    }
}
