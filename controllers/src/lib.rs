//! The controller runtime (work queue, reconcile loop, leader election, events) and the built-in controllers.
