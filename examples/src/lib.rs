//! The reference cluster and small examples of each extension point.
