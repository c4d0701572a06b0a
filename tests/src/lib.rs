//! End-to-end tests across the bosun crates.
