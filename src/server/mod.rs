//! The sidecar's HTTP side, in the order a request meets it:
//!
//! - `accept`: the listeners (callers, and operations when `--ops-listen` is set), their
//!   connection limits, the request-header timeout, TLS, graceful shutdown;
//! - `routes`: which listener serves which endpoint, one table (404 and 405 come from it);
//! - `records`: `GET /sat/records` and `/sat/activity` as named steps: authenticate, take a
//!   stream slot ([`limits`]), take the policy set, call the upstream, check the first line,
//!   then stream the records or summarize them; `negotiate` picks JSON or CSV;
//! - `ops`: `/healthz`, `/readyz`, `/metrics` and `/admin/...`;
//! - `response`: JSON bodies and the one refusal type every step returns;
//! - [`decision_log`]: the start and end records of every served request, durable before the
//!   answer's first and last byte, through one writer thread.
//!
//! - `reload`: the reload task (policies, inventory, keys, TLS): not HTTP, but the server's state.

mod accept;
pub mod body;
pub mod correlation;
pub mod decision_log;
pub mod extproc;
pub mod limits;
mod negotiate;
mod ops;
mod records;
pub mod reload;
mod response;
mod routes;
pub mod steps;

use std::sync::Arc;
use std::time::Duration;

pub use accept::{run, run_ops, Listeners};
pub use limits::StreamLimits;
pub use reload::{reload_once, spawn_reloader};
pub use response::{error, ResponseBody};

use crate::auth::Authenticator;
use crate::decision::PolicyStore;
use crate::metrics::Metrics;
use crate::ownership::{CachedSource, InventoryFile};
use crate::tls::client::ClientTls;
use crate::tls::ServerTls;
use crate::upstream::Upstream;

/// Everything a request needs, shared by all connections of both listeners.
pub struct State {
    pub auth: Authenticator,
    pub policies: PolicyStore,
    /// The inventory file, when ownership comes from one (reloads, readiness).
    pub inventory: Option<Arc<InventoryFile>>,
    /// Ownership look-ups, cached, whatever the source.
    pub ownership: Arc<CachedSource>,
    /// `host:port` of the inventory service, when ownership comes from one (readiness probe).
    pub inventory_service: Option<String>,
    /// TLS to the inventory service, when it is `https://` (reloads, readiness).
    pub inventory_tls: Option<Arc<ClientTls>>,
    /// TLS to the upstream, when it is `https://` (reloads, readiness).
    pub upstream_tls: Option<Arc<ClientTls>>,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub max_line_bytes: usize,
    /// Most caller connections served at once.
    pub max_connections: usize,
    /// Longest a client may take to send complete request headers (or a TLS handshake).
    pub header_timeout: Duration,
    /// Record streams in flight, overall and per User.
    pub streams: limits::StreamBudget,
    /// Whether the operations endpoints have a listener of their own (then the callers'
    /// listener serves only `/sat/*`).
    pub separate_ops: bool,
    /// Bearer token for the admin endpoint; `None` disables it.
    pub admin_token: Option<Vec<u8>>,
    /// TLS termination on the callers' listener; plain HTTP when `None`.
    pub tls: Option<ServerTls>,
    /// Where each served request's decision record goes.
    pub decision_log: decision_log::DecisionLog,
}
