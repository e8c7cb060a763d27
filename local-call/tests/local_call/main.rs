//! The local call's integration tests, one binary: the wire protocol's parsing (proptest) and
//! the hub's rooms with agents on `HubEdge` (both in `protocol`).

// Helpers are `pub` for readability; the test binary exports nothing.
#![allow(unreachable_pub)]

mod protocol;
