//! Integration tests of bosun-core through its public API.

mod fake;
mod reflector;
