//! The conformance suite every `Storage` backend passes (filled in next).
