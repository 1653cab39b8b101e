//! The fleet file: types, loading with located errors, validation, resolution.

mod de;
pub mod node;
pub mod types;
pub mod units;
