//! Files hangar reads from or writes to the local machine: the fleet file it
//! is given, and the state directory it keeps. Everything here distrusts the
//! file system: special files, symlinks and unbounded sizes are refused
//! ([`state`] for the state directory).

pub mod fleet;
pub mod state;
