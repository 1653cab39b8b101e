//! Planning: a pure function from desired and observed state to actions.

pub mod model;
