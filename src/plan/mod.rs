//! Planning: a pure function from desired and observed state to actions.

pub mod model;
pub mod planner;
pub mod render;
mod room;
pub mod scale;

pub use planner::{destroy, plan};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod room_tests;
#[cfg(test)]
mod runner_tests;
#[cfg(test)]
mod scale_tests;
#[cfg(test)]
mod tests;
