//! The scheduling framework: extension-point plugin traits, default plugins, queue, cache and preemption.
