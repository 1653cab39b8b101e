//! The fleet file: types, loading with located errors, validation, resolution.
