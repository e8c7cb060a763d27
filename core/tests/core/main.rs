//! core's integration tests: the registry conformance suite on `MemoryRegistry`, the
//! estimator's accuracy and memory bound, and the in-memory registry's own bounds.

mod anchor_registry;
mod memory;
mod metrics;
mod service;
