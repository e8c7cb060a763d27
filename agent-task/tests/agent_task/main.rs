//! agent-task integration tests.
