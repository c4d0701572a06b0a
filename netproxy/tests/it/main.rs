//! Integration tests of bosun-netproxy.
