//! satgate: a policy-as-code authorization sidecar for the DCC Service Audit Trail (SAT).
//!
//! For every SAT record the upstream returns, satgate asks Cedar policies which field classes
//! the caller may see, writes only those fields, and leaves out records the caller may not see.
//!
//! # Layout
//!
//! The request path, top to bottom:
//!
//! - [`cmd`]: one module per subcommand; `main.rs` only dispatches and maps exit codes.
//! - [`stream`]: NDJSON framing ([`stream::lines`]), one record parsed without copying
//!   ([`stream::record`]), the per-record pipeline ([`stream::filter`]) and the allowlist
//!   projection of allowed fields ([`stream::project`]).
//! - [`decision`]: policies and schema loading, the Cedar request built from a record's facts,
//!   and decisions reused for records with equal facts.
//! - [`ownership`]: who owns a Device now, from the inventory.
//! - [`model`]: identifiers, roles, message types, field classes.
//! - [`review`]: policy review tooling (tests, access matrix, diff, symbolic proofs).

pub mod auth;
pub mod cmd;
pub mod config;
pub mod decision;
pub mod metrics;
pub mod model;
pub mod ownership;
pub mod reload;
pub mod review;
pub mod sample;
pub mod server;
pub mod stream;
pub mod upstream;
