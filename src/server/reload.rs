//! Reloading what satgate reads from files (policies and schema, JWT keys, TLS certificate and
//! key, inventory) when they change: one task polls every `--reload-interval`, and every
//! outcome is counted and logged in one place. A failed load leaves the last good one in force.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::State;
use crate::metrics::{ReasonLabel, ResultLabel};

/// Reloads policies, JWT keys, TLS files and inventory when their files change, every `interval`.
pub fn spawn_reloader(state: Arc<State>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = Arc::clone(&state);
            let _ = tokio::task::spawn_blocking(move || reload_once(&s)).await;
        }
    })
}

/// One reload check of every watched file.
pub fn reload_once(state: &State) {
    let m = &state.metrics;
    let policies = state.policies.reload_if_changed();
    if let (Some(Err(e)), true) = (&policies, state.policies.is_bundle()) {
        m.policy_bundle_refusals
            .get_or_create(&ReasonLabel { reason: e.reason() })
            .inc();
    }
    if let Some(n) = counted(&m.policy_reloads, "policy set", policies) {
        let current = state.policies.current();
        m.set_policy(current.identity());
        tracing::info!(policies = n, policy = %current.identity(), "policy set reloaded");
    }
    m.set_reload_successful("policy", state.policies.last_error().is_none());
    if let Some(expired) = state.policies.newly_expired(crate::bundle::now()) {
        tracing::error!(
            expired_at = %crate::bundle::rfc3339(expired),
            policy = %state.policies.current().identity(),
            "the policy bundle in force has expired: it keeps serving until a fresh one loads, but a restart will refuse it"
        );
    }
    if let Some(n) = counted(&m.jwt_key_reloads, "JWT key", state.auth.reload_if_changed()) {
        tracing::info!(keys = n, "JWT verification keys reloaded");
    }
    m.set_reload_successful("jwt_key", state.auth.last_error().is_none());
    if let Some(tls) = &state.tls {
        if counted(&m.tls_reloads, "TLS certificate", tls.reload_if_changed()).is_some() {
            tracing::info!("TLS certificate and key reloaded");
        }
        m.set_reload_successful("tls", tls.last_error().is_none());
    }
    for (tls, component) in [
        (&state.inventory_tls, "inventory_tls"),
        (&state.upstream_tls, "upstream_tls"),
    ] {
        let Some(tls) = tls else { continue };
        if counted(&m.tls_reloads, "outbound TLS files", tls.reload_if_changed()).is_some() {
            if component == "inventory_tls" {
                // Owners answered by a server the old CA vouched for must not outlive it.
                state.ownership.invalidate_all();
            }
            tracing::info!(peer = tls.peer(), "outbound TLS CA and client certificate reloaded");
        }
        m.set_reload_successful(component, tls.last_error().is_none());
    }
    let Some(inventory) = &state.inventory else { return };
    if let Some(warnings) = counted(&m.inventory_reloads, "inventory", inventory.reload_if_changed()) {
        // Owners cached from the old file must not outlive it.
        state.ownership.invalidate_all();
        log_left_out(&warnings);
        tracing::info!(devices = inventory.current().len(), "inventory reloaded");
    }
    m.set_reload_successful("inventory", inventory.last_error().is_none());
    check_inventory_age(state);
}

/// Counts one reload check's outcome (nothing when the files had not changed) and logs a
/// failure, escaped to one line (the error may quote what was read: a policy's text, a file
/// name); gives back what a successful reload loaded.
fn counted<T, E: std::fmt::Display>(
    reloads: &Family<ResultLabel, Counter>,
    what: &str,
    outcome: Option<Result<T, E>>,
) -> Option<T> {
    let result = if outcome.as_ref()?.is_ok() { "ok" } else { "failed" };
    reloads.get_or_create(&ResultLabel { result }).inc();
    match outcome? {
        Ok(loaded) => Some(loaded),
        Err(e) => {
            tracing::error!(
                error = %e.to_string().escape_debug(),
                "{what} reload failed; the last good one stays in use"
            );
            None
        }
    }
}

/// After an inventory check: the staleness gauge, and owners cached from an inventory now too far
/// out of date dropped at once (the file source answers "no owners" from now on).
pub fn check_inventory_age(state: &State) {
    let Some(inventory) = &state.inventory else { return };
    let stale = inventory.stale_for().unwrap_or_default();
    state.metrics.inventory_stale_seconds.set(stale.as_secs() as i64);
    state.metrics.owner_views_withheld.set(i64::from(inventory.withheld()));
    if inventory.newly_withheld() {
        state.ownership.invalidate_all();
        tracing::error!(
            stale_seconds = stale.as_secs(),
            "inventory out of date for longer than --inventory-max-age: owner views withheld until it loads"
        );
    }
}

/// Inventory entries left out that are logged one by one at a load (the rest are counted): enough
/// to see what kind of mistake it is without flooding the log with a broken export.
const WARNINGS_LOGGED: usize = 20;

/// Logs the inventory entries left out (the first few one by one).
pub fn log_left_out(warnings: &[String]) {
    for w in warnings.iter().take(WARNINGS_LOGGED) {
        tracing::warn!(entry = %w, "inventory entry left out");
    }
    if warnings.len() > WARNINGS_LOGGED {
        tracing::warn!(
            more = warnings.len() - WARNINGS_LOGGED,
            "more inventory entries left out"
        );
    }
}
