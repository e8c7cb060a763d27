//! AWS adapters behind the core ports.
//!
//! # Layout
//! - [`dynamodb`]: [`DynamoRegistry`], the cluster-wide `SessionRegistry` on one DynamoDB
//!   table (atomic limits, leases, close flags, history), and [`dynamodb::create_table`], which
//!   creates the table exactly as `template.yaml` will declare it.
//!
//! # Must not depend on
//! No `axum` or `lambda_*`: the HTTP router and the Lambda binaries use these adapters through
//! the core ports. SDK errors are translated here, at the seam, into `switchboard_core::Error`.

pub mod dynamodb;

pub use dynamodb::DynamoRegistry;
