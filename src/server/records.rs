//! `GET /sat/records?{query}` and `GET /sat/activity?{query}`, as named steps. Both views share
//! every step up to the filter: authentication, a stream slot, the policy set, the same upstream
//! call, the same decisions. Each step before streaming either hands the next one what it needs
//! or refuses with a [`Reject`], which becomes both the response and the access-log line. Once
//! records stream, a failure ends the response early (see [`crate::stream::body`]); the activity
//! view answers only at the end, so its failures are ordinary error answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::correlation::{Correlation, REQUEST_ID};
use super::decision_log::DecisionRecord;
use super::limits::{Busy, StreamSlot};
use super::negotiate;
use super::response::{Reject, ResponseBody};
use super::State;
use crate::activity::{Activity, Limits};
use crate::auth::{Identity, Refusal};
use crate::decision::PolicyIdentity;
use crate::metrics::ReasonLabel;
use crate::model::Principal;
use crate::ownership::OwnershipSource;
use crate::stream::body::{self, RecordStream, StreamError};
use crate::stream::{FilterStats, Format, Output, RecordFilter};

/// Which view of the records a request asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The visible records themselves.
    Records,
    /// A per-Device summary of the same records.
    Activity,
}

impl View {
    pub const fn as_str(self) -> &'static str {
        match self {
            View::Records => "records",
            View::Activity => "activity",
        }
    }
}

/// Names the policy set that decided a `/sat/records` answer: `sha256:HEX; revision=REV`.
pub const POLICY_HEADER: &str = "satgate-policy";

/// Seconds a refused caller is asked to wait: streams usually last well under a second, and a
/// stalled one is cut at `--idle-timeout`.
const RETRY_AFTER_SECONDS: u32 = 1;

/// One request's access-log line: who, what, and how it ended. Written once per request, by
/// [`Access::log`], whether it was refused or served.
struct Access {
    peer: SocketAddr,
    view: View,
    query: Option<String>,
    started: Instant,
    correlation: Correlation,
}

impl Access {
    /// `stream`: the stream's counts and ownership errors, when the request was served.
    fn log(
        &self,
        status: u16,
        principal: Option<&Principal>,
        outcome: &str,
        stream: Option<(&FilterStats, u64)>,
        policy: Option<&str>,
    ) {
        let stats = stream.map(|(s, _)| s);
        tracing::info!(
            target: "satgate::access",
            peer = %self.peer,
            view = self.view.as_str(),
            request_id = %self.correlation.request_id,
            trace_id = %self.correlation.trace_id,
            sub = principal.map(|p| p.user_id.to_string()),
            role = principal.map(|p| p.role.as_str()),
            party = principal.map(|p| p.party.as_str()),
            query = self.query.as_deref().unwrap_or(""),
            status,
            records_in = stats.map(|s| s.records_in),
            records_out = stats.map(|s| s.records_out),
            records_not_visible = stats.map(|s| s.left_out),
            records_malformed = stats.map(|s| s.malformed),
            ownership_errors = stream.map(|(_, e)| e),
            policy,
            outcome,
            duration_ms = self.started.elapsed().as_secs_f64() * 1e3,
            "{}",
            if stream.is_some() { "request served" } else { "request refused" }
        );
    }
}

pub async fn serve(
    state: &Arc<State>,
    req: &Request<Incoming>,
    peer: SocketAddr,
    view: View,
) -> Response<ResponseBody> {
    let access = Access {
        peer,
        view,
        query: req.uri().query().map(str::to_owned),
        started: Instant::now(),
        correlation: Correlation::from_headers(req.headers()),
    };
    let request_id = HeaderValue::from_str(&access.correlation.request_id).ok();
    let format = negotiate::format(req.headers());
    let output = match view {
        View::Records => Output::records(format),
        View::Activity => Output::Activity(Box::new(Activity::new(Limits::DEFAULT))),
    };
    let mut resp = match authenticate(state, req) {
        Err(reject) => {
            access.log(reject.status.as_u16(), None, &reject.message, None, None);
            reject.into_response()
        }
        Ok(identity) => match start(state, &identity, &access, output).await {
            Ok(started) => match view {
                View::Records => respond(state, started, identity.principal, access, format),
                View::Activity => summarize(state, started, identity.principal, access, format).await,
            },
            Err(reject) => {
                let policy = state.policies.current().identity().to_string();
                access.log(
                    reject.status.as_u16(),
                    Some(&identity.principal),
                    &reject.message,
                    None,
                    Some(&policy),
                );
                reject.into_response()
            }
        },
    };
    if let Some(id) = request_id {
        resp.headers_mut().insert(REQUEST_ID, id);
    }
    resp
}

/// 401 or 403, with texts that never quote the token.
fn authenticate(state: &State, req: &Request<Incoming>) -> Result<Identity, Reject> {
    let header = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    state.auth.identify(header).map_err(|refusal| match refusal {
        Refusal::Unauthenticated(why) => Reject::new(StatusCode::UNAUTHORIZED, "unauthenticated", why),
        Refusal::Forbidden(why) => Reject::new(StatusCode::FORBIDDEN, "forbidden", why),
    })
}

/// A request whose upstream answered with NDJSON: its records to filter, its stream slot, and
/// the policy set that decides them.
struct Started {
    stream: RecordStream,
    slot: StreamSlot,
    policy: PolicyIdentity,
}

/// Takes a stream slot, then the policy set, calls the upstream and checks its first line.
async fn start(state: &State, identity: &Identity, access: &Access, output: Output) -> Result<Started, Reject> {
    let principal = &identity.principal;
    // Before the upstream call: a refused stream costs nothing but this check.
    let slot = state.streams.try_take(principal.user_id).map_err(|busy| {
        state
            .metrics
            .streams_refused
            .get_or_create(&ReasonLabel { reason: busy.label() })
            .inc();
        match busy {
            Busy::Full => Reject::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many record streams in flight; try again shortly",
            ),
            Busy::User => Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                "this User has too many record streams in flight",
            ),
        }
        .retry_after(RETRY_AFTER_SECONDS)
    })?;
    // The policy set in force now; this request keeps it even if a reload happens meanwhile.
    let engine = state.policies.current();
    let upstream_headers = access.correlation.upstream_headers();
    let (upstream, latency) = state
        .upstream
        .records(access.query.as_deref(), upstream_headers)
        .await
        .map_err(|e| {
            let code = if e.status() == StatusCode::GATEWAY_TIMEOUT {
                "upstream_timeout"
            } else {
                "bad_gateway"
            };
            Reject::new(e.status(), code, e.to_string())
        })?;
    state.metrics.upstream_latency.observe(latency.as_secs_f64());

    let deadline = identity.expires.map(|at| {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Instant::now() + left
    });
    let mut stream = RecordStream::new(
        upstream.into_body(),
        RecordFilter::with_output(engine.for_principal(principal), output),
        Arc::clone(&state.ownership) as Arc<dyn OwnershipSource>,
        state.max_line_bytes,
        state.upstream.timeouts().idle,
    )
    .with_deadline(deadline);
    stream.check_first_line().await.map_err(|e| match e {
        StreamError::IdleTimeout => Reject::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", e.to_string()),
        _ => Reject::new(StatusCode::BAD_GATEWAY, "bad_gateway", e.to_string()),
    })?;
    Ok(Started {
        stream,
        slot,
        policy: engine.identity().clone(),
    })
}

/// Starts the filtering task and answers 200 with its body. The task holds the stream slot until
/// the stream ends, then counts and logs it.
fn respond(
    state: &Arc<State>,
    started: Started,
    principal: Principal,
    access: Access,
    format: Format,
) -> Response<ResponseBody> {
    let Started { stream, slot, policy } = started;
    let (tx, body) = body::channel();
    let metrics = Arc::clone(&state.metrics);
    let state = Arc::clone(state);
    metrics.active_streams.inc();
    let header_policy = policy_header(&policy);
    let correlation = access.correlation.upstream_headers();
    tokio::spawn(crate::net::CORRELATION.scope(correlation, async move {
        let (stream, result) = stream.run(tx).await;
        drop(slot);
        metrics.active_streams.dec();
        metrics.record_stream(stream.stats());
        let outcome = match &result {
            Ok(()) => "complete".to_owned(),
            Err(e) => {
                metrics
                    .streams_aborted
                    .get_or_create(&ReasonLabel { reason: e.reason() })
                    .inc();
                format!("ended early: {e}")
            }
        };
        finished(&state, &access, &principal, &policy, 200, &outcome, &stream);
    }));
    let content_type = match format {
        Format::Json => "application/x-ndjson",
        Format::Csv => CSV_TYPE,
    };
    let mut resp = Response::new(body.boxed());
    headers(&mut resp, content_type, header_policy);
    resp
}

const CSV_TYPE: &str = "text/csv; charset=utf-8; header=present";

/// Reads the whole upstream answer into the activity summary, then answers: 200 with the summary
/// (streamed in pieces, so the answer's size adds nothing to the tallies' memory), 422 when it
/// went over a cap, or the upstream's failure as an error answer. The stream slot is held until
/// the summary is sent.
async fn summarize(
    state: &Arc<State>,
    started: Started,
    principal: Principal,
    access: Access,
    format: Format,
) -> Response<ResponseBody> {
    let Started { stream, slot, policy } = started;
    let metrics = &state.metrics;
    metrics.active_streams.inc();
    let correlation = access.correlation.upstream_headers();
    let (stream, result) = crate::net::CORRELATION.scope(correlation, stream.consume()).await;
    metrics.record_stream(stream.stats());
    let overflow = stream.filter().activity().and_then(Activity::overflow);
    let refusal = match (&result, overflow) {
        (Err(e), _) => {
            metrics
                .streams_aborted
                .get_or_create(&ReasonLabel { reason: e.reason() })
                .inc();
            Some(match e {
                StreamError::IdleTimeout => Reject::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", e.to_string()),
                StreamError::TokenExpired => Reject::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()),
                _ => Reject::new(StatusCode::BAD_GATEWAY, "bad_gateway", e.to_string()),
            })
        }
        (Ok(()), Some(over)) => Some(Reject::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_much_activity",
            over.to_string(),
        )),
        (Ok(()), None) => None,
    };
    let (status, outcome) = match &refusal {
        Some(r) => (r.status.as_u16(), r.message.as_str()),
        None => (200, "complete"),
    };
    finished(state, &access, &principal, &policy, status, outcome, &stream);
    let activity = stream.into_filter().into_activity();
    let (Some(activity), None) = (activity, &refusal) else {
        drop(slot);
        metrics.active_streams.dec();
        return refusal
            .unwrap_or_else(|| Reject::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no activity summary"))
            .into_response();
    };

    let (tx, body) = body::channel();
    let (metrics, idle) = (Arc::clone(&state.metrics), state.upstream.timeouts().idle);
    tokio::spawn(async move {
        let mut sent = true;
        for piece in activity.render(format) {
            // A caller that stops reading is cut off, as on /sat/records.
            if !matches!(tokio::time::timeout(idle, tx.send(piece.into())).await, Ok(Ok(()))) {
                sent = false;
                break;
            }
        }
        if sent {
            tx.finish();
        }
        drop(slot);
        metrics.active_streams.dec();
    });
    let content_type = match format {
        Format::Json => "application/json",
        Format::Csv => CSV_TYPE,
    };
    let mut resp = Response::new(body.boxed());
    headers(&mut resp, content_type, policy_header(&policy));
    resp
}

/// The access-log line and the decision record of a request whose records were read.
fn finished(
    state: &State,
    access: &Access,
    principal: &Principal,
    policy: &PolicyIdentity,
    status: u16,
    outcome: &str,
    stream: &RecordStream,
) {
    let logged_policy = policy.to_string();
    access.log(
        status,
        Some(principal),
        outcome,
        Some((stream.stats(), stream.lookup_errors)),
        Some(&logged_policy),
    );
    state.decision_log.write(&DecisionRecord {
        request_id: &access.correlation.request_id,
        trace_id: &access.correlation.trace_id,
        principal,
        view: access.view.as_str(),
        query: access.query.as_deref(),
        status,
        policy,
        outcome,
        stats: stream.stats(),
        tally: &stream.tally(),
    });
}

/// The headers of an answer carrying records or their summary.
fn headers(resp: &mut Response<ResponseBody>, content_type: &'static str, policy: HeaderValue) {
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Which reviewed policy set decided this answer (the bundle's SHA-256 and revision).
    headers.insert(POLICY_HEADER, policy);
}

/// The `Satgate-Policy` value naming `policy`: always present and always valid. The identity's
/// text is escaped ([`PolicyIdentity`]'s `Display`: visible ASCII and spaces only), so it is a
/// valid header value whatever a bundle carried; were it ever not, the answer would still name
/// the set, by a placeholder saying so, rather than go without the header.
pub fn policy_header(policy: &PolicyIdentity) -> HeaderValue {
    HeaderValue::from_str(&policy.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unnameable; see /readyz"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the revision holds (quotes, newlines, control characters, non-ASCII, an empty
    /// one), the header is there, is valid, and names a valid revision exactly.
    #[test]
    fn the_policy_header_is_always_valid_and_present() {
        let id = |revision: &str| PolicyIdentity {
            sha256: "ab".repeat(32),
            revision: Some(revision.into()),
            serial: Some(1),
            expires: Some(2),
        };
        assert_eq!(
            policy_header(&id("rev-1")).to_str().unwrap(),
            format!("sha256:{}; revision=rev-1", "ab".repeat(32))
        );
        for raw in [
            "\"}",
            "a\nb",
            "a\r\nSet-Cookie: x=y",
            "\u{0}",
            "\u{7}",
            "\u{7f}",
            "caf\u{e9}",
            "\u{202e}rtl",
            "",
            "\t",
        ] {
            let v = policy_header(&id(raw));
            let text = v.to_str().expect("visible ASCII");
            assert!(
                text.starts_with("sha256:") && text.contains("; revision="),
                "{raw:?}: {text}"
            );
            assert!(!text.contains(['\r', '\n', '"']), "{raw:?}: {text}");
            let mut resp = Response::new(super::super::response::full(String::new()));
            headers(&mut resp, "application/x-ndjson", v.clone());
            assert_eq!(resp.headers().get(POLICY_HEADER), Some(&v), "{raw:?}: present");
        }
    }
}
