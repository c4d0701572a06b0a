//! Integration tests: the scheduler against the store's in-process API server.

mod harness;
mod race;
mod scheduling;
mod volumes;
