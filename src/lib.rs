//! satgate: a policy-as-code authorization sidecar for the DCC Service Audit Trail (SAT).
//!
//! For every SAT record the upstream returns, satgate asks Cedar policies which field classes
//! the caller may see, writes only those fields, and leaves out records the caller may not see.
//!
//! # Layout
//!
//! The request path, top to bottom:
//!
//! - [`server`]: the callers' and operations listeners with their limits, TLS termination
//!   ([`tls`]), the route table, the `/sat/records` steps, stream slots and the memory formula,
//!   graceful shutdown; [`config`] resolves its settings, [`reload`] reloads files.
//! - [`auth`]: `Authorization: Bearer` JWT to a [`model::Principal`], or 401/403.
//! - [`upstream`]: the call to the SAT endpoint, with timeouts.
//! - [`stream`]: the streaming body with backpressure ([`stream::body`]), NDJSON framing
//!   ([`stream::lines`]), one record parsed without copying ([`stream::record`]), the
//!   per-record pipeline ([`stream::filter`]) and the allowlist projection ([`stream::project`]).
//! - [`decision`]: policies and schema loading, the Cedar request built from the principal's role
//!   and a record's facts, the finite space of those ([`decision::space`]) over which the load-time
//!   guard proves a set within its invariants, decisions reused for equal facts, and the policy
//!   set in force.
//! - [`ownership`]: who owns a Device now: the inventory file and HTTP sources and the cache.
//! - [`model`]: identifiers, roles, message types, field classes.
//!
//! - [`upstream`] and [`ownership::HttpSource`] share [`net`] (base URLs, the HTTP client).
//!
//! Around it: [`cmd`] (one module per subcommand; `main.rs` only dispatches), [`review`]
//! (policy tests, access matrix, diff, symbolic proofs), [`metrics`], [`watch`] (file changes
//! and the one reload mechanism) and [`sample`] (generated data and stand-in services for the
//! demo, tests and benchmarks). The external contract the code cites is `docs/contract.md`.

pub mod auth;
pub mod bundle;
pub mod cmd;
pub mod config;
pub mod decision;
pub mod metrics;
pub mod model;
pub mod net;
pub mod ownership;
pub mod reload;
pub mod review;
pub mod sample;
pub mod server;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod views;
pub mod watch;
