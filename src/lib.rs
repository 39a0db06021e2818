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
//!   ([`tls`]), the route table, the `/sat/records` and `/sat/activity` steps, stream slots and
//!   the memory formula, the hyper adapters of the record pipeline ([`server::body`]), the reload
//!   task ([`server::reload`]), the decision log that records every disclosure before it leaves
//!   ([`server::decision_log`]), graceful shutdown; [`config`] resolves its settings.
//! - [`auth`]: `Authorization: Bearer` JWT to a [`model::Principal`], or 401/403.
//! - [`upstream`]: the call to the SAT endpoint, with timeouts.
//! - [`views`]: what a caller gets of the records it may see, each a [`stream::Sink`]: NDJSON
//!   ([`views::ndjson`]), CSV ([`views::csv`]), the activity tallies ([`views::activity`]) and
//!   their page for a browser ([`views::html`]).
//! - [`stream`]: the record pipeline, transport-free ([`stream::pipeline`]: frames in, chunks
//!   out), NDJSON framing ([`stream::lines`]), the field table ([`stream::fields`]), the scanner
//!   ([`stream::scan`]) and one record ([`stream::record`]), the per-record decision
//!   ([`stream::filter`]) and the [`stream::Sink`] it hands visible records to.
//! - [`decision`]: policies and schema loading, the Cedar request built from the principal's role
//!   and a record's facts, the finite space of those ([`decision::space`]) over which the load-time
//!   guard proves a set within its invariants, decisions reused for equal facts, and the policy
//!   set in force.
//! - [`ownership`]: who owns a Device now: the inventory file and HTTP sources, the cache, and
//!   [`ownership::SourceConfig::open`], the one builder `serve`, `filter` and `activity` use.
//! - [`model`]: identifiers, roles, message types, field classes.
//!
//! - [`upstream`] and [`ownership::HttpSource`] share [`net`] (base URLs, the HTTP client) and,
//!   for `https://`, [`tls::client`] (pinned CA, client certificate, reloaded on change).
//!
//! Around it: [`cmd`] (one module per subcommand; `main.rs` only dispatches), [`review`]
//! (policy tests, access matrix, diff, symbolic proofs), [`bundle`] (signed policy bundles,
//! built from the files it is given), [`metrics`], [`watch`] (file changes and the one reload
//! mechanism) and [`sample`] (generated data and stand-in services for the demo, tests and
//! benchmarks). The external contract the code cites is `docs/contract.md`.
//!
//! # Direction rules
//!
//! Checked on the `use` lines under `src/` by the test `layers::the_direction_rules_hold`
//! (`tests/suite/layers.rs`):
//!
//! 1. [`stream`] imports nothing from [`views`], [`server`], [`cmd`], [`review`] or [`sample`]:
//!    the filter knows neither its views nor its transports.
//! 2. Serving modules (`auth`, `bundle`, `config`, `decision`, `metrics`, `model`, `net`,
//!    `ownership`, `server`, `stream`, `tls`, `upstream`, `views`, `watch`) never import tooling or
//!    commands ([`cmd`], [`review`], [`sample`]).
//! 3. No file imports one that imports it back.
//!
//! What still points from a lower layer to a higher one, and why:
//!
//! - `config` (`config/defaults.rs`) names `server::StreamLimits::DEFAULT`, the stream's line
//!   limit and the ownership components' `DEFAULT`s: each default is written once, by the
//!   component that owns it, and gathered there for help texts and flag resolution (config is
//!   above what it configures; no component imports its configuration).
//! - `stream::filter` asks [`ownership`] and [`decision`] (both below the server, above the
//!   model): the decision is the filter's job.
//! - [`metrics`] names `stream::StreamError::REASONS` to pre-register its label values.

pub mod auth;
pub mod bundle;
pub mod cmd;
pub mod config;
pub mod decision;
pub mod metrics;
pub mod model;
pub mod net;
pub mod ownership;
pub mod review;
pub mod sample;
pub mod server;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod views;
pub mod watch;
