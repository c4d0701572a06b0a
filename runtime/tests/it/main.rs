//! Integration tests of bosun-runtime: the shared conformance suite against every backend, and the
//! node agent against the in-memory API server.

mod agent_fake;
mod agent_process;
mod conformance;
mod runc;
mod support;
