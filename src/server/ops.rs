//! The operations endpoints: liveness, readiness, metrics and the admin action. With
//! `--ops-listen` they are served only there, apart from callers (see [`super::routes`]).

use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::response::{error, full, json_response, ResponseBody};
use super::State;

pub fn healthz() -> Response<ResponseBody> {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

/// Prometheus text (0.0.4) by default; OpenMetrics when the scraper asks for it.
pub fn metrics(state: &State, req: &Request<Incoming>) -> Response<ResponseBody> {
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let text = if openmetrics {
        state.metrics.encode()
    } else {
        state.metrics.encode_prometheus()
    };
    let mut resp = Response::new(full(text));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

/// What `POST /admin/ownership/invalidate` was asked to forget.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalidate<'q> {
    All,
    Device(&'q str),
}

/// The query of the admin endpoint: nothing, or exactly one `deviceId=`. Anything else is a
/// mistake to report, not a reason to clear the whole cache.
pub fn invalidate_query(query: Option<&str>) -> Result<Invalidate<'_>, &'static str> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(Invalidate::All);
    };
    let mut device = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("deviceId", v)) if device.is_none() => device = Some(v),
            Some(("deviceId", _)) => return Err("deviceId given more than once"),
            _ => return Err("the only parameter is deviceId (exact case)"),
        }
    }
    device.map(Invalidate::Device).ok_or("the only parameter is deviceId")
}

/// `POST /admin/ownership/invalidate[?deviceId=EUI]`: forget one Device's cached owners, or all,
/// when a registration change is known to have happened.
pub async fn admin_invalidate(state: &State, req: &Request<Incoming>) -> Response<ResponseBody> {
    let Some(expected) = &state.admin_token else {
        return error(StatusCode::NOT_FOUND, "not_found", "the admin endpoint is not enabled");
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| crate::auth::bearer(v.as_bytes()))
        .unwrap_or_default();
    if !constant_time_eq(given, expected) {
        return error(StatusCode::UNAUTHORIZED, "unauthenticated", "admin token required");
    }
    match invalidate_query(req.uri().query()) {
        Err(why) => error(StatusCode::BAD_REQUEST, "bad_request", why),
        Ok(Invalidate::All) => {
            state.ownership.invalidate_all();
            tracing::info!("admin: ownership cache cleared");
            json_response(StatusCode::OK, json!({"invalidated": "all"}))
        }
        Ok(Invalidate::Device(raw)) => match crate::model::Eui64::parse(raw) {
            Ok(id) => {
                state.ownership.invalidate(id).await;
                tracing::info!(device = %id, "admin: cached owners forgotten");
                json_response(StatusCode::OK, json!({"invalidated": id.to_string()}))
            }
            Err(_) => error(StatusCode::BAD_REQUEST, "bad_request", "deviceId must be an EUI-64"),
        },
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn readyz(state: &State) -> Response<ResponseBody> {
    let upstream_reachable = reachable(Some(state.upstream.authority().to_owned())).await;
    let engine = state.policies.current();
    let (inventory, inventory_ok) = match (&state.inventory, &state.inventory_service) {
        (Some(file), _) => (
            json!({
                "source": "file",
                "loaded": true,
                "devices": file.current().len(),
                "lastReloadError": file.last_error(),
                "staleSeconds": file.stale_for().map(|d| d.as_secs()),
                "ownerViewsWithheld": file.withheld(),
            }),
            true,
        ),
        (None, service) => {
            let reachable = reachable(service.clone()).await;
            // A service that answers TCP but fails TLS gives no owner views: not ready.
            let tls_failing = state.inventory_tls.as_ref().and_then(|t| t.last_failure());
            let mut body = json!({"source": "http", "reachable": reachable, "cachedDevices": state.ownership.stats().entries.get()});
            if let Some(tls) = &state.inventory_tls {
                body["tls"] = outbound_tls(tls);
            }
            (body, reachable && tls_failing.is_none())
        }
    };
    let upstream_ok = upstream_reachable && state.upstream_tls.as_ref().is_none_or(|t| t.last_failure().is_none());
    let identity = engine.identity();
    let mut body = json!({
        "policies": {
            "loaded": true,
            "count": engine.policies().policies().count(),
            "sha256": identity.sha256,
            "revision": identity.revision,
            // A bundle's freshness (null for a directory). An expired bundle keeps serving until
            // a fresh one loads (see PolicyStore::newly_expired), so this is not a failure.
            "serial": identity.serial,
            "expires": identity.expires.map(crate::bundle::rfc3339),
            "expired": identity.expires.map(|at| at <= crate::bundle::now()),
            "minRevision": state.policies.min_serial(),
            "lastReloadError": state.policies.last_error(),
            // Why the newest policy files were refused, in one word (rollback, serial_reused,
            // expired, trusted_comment, ...); null when the newest loaded.
            "lastReloadRefusal": state.policies.last_refusal(),
        },
        "inventory": inventory,
        "upstream": {"reachable": upstream_reachable},
        "auth": {"keys": state.auth.key_count(), "lastReloadError": state.auth.last_error()},
        "streams": {"inFlight": state.streams.in_flight(), "max": state.streams.limits().max_streams},
        "decisionLog": state.decision_log.status(),
    });
    if let Some(tls) = &state.tls {
        body["tls"] = json!({"loaded": true, "lastReloadError": tls.last_error()});
    }
    if let Some(tls) = &state.upstream_tls {
        body["upstream"]["tls"] = outbound_tls(tls);
    }
    // A failed reload is reported but not fatal: the last good policies and inventory serve.
    // A required decision log that cannot be written is: every request is refused meanwhile.
    let log_ok = !(state.decision_log.required() && state.decision_log.unwritable().is_some());
    let status = if upstream_ok && inventory_ok && log_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, body)
}

/// An outbound TLS client's state: why its last handshake failed (null: it succeeded, or none
/// was made yet) and its last reload error.
fn outbound_tls(tls: &crate::tls::client::ClientTls) -> serde_json::Value {
    json!({"lastFailure": tls.last_failure(), "lastReloadError": tls.last_error()})
}

/// Whether a TCP connection to `addr` opens within a second.
async fn reachable(addr: Option<String>) -> bool {
    match addr {
        Some(addr) => matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        ),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_query_is_nothing_or_exactly_one_device_id() {
        assert_eq!(invalidate_query(None), Ok(Invalidate::All));
        assert_eq!(invalidate_query(Some("")), Ok(Invalidate::All));
        assert_eq!(
            invalidate_query(Some("deviceId=00-DB-12-34-56-78-90-A0")),
            Ok(Invalidate::Device("00-DB-12-34-56-78-90-A0"))
        );
        for bad in [
            "deviceid=00-DB-12-34-56-78-90-A0",
            "DeviceId=x",
            "device=x",
            "deviceId=a&deviceId=b",
            "deviceId=a&all=1",
            "all",
            "&",
        ] {
            assert!(invalidate_query(Some(bad)).is_err(), "{bad} accepted");
        }
    }
}
