//! GitHub runner registry over octocrab.
