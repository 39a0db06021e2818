//! `GET /sat/records?{query}` and `GET /sat/activity?{query}`, as named steps. Both views share
//! every step up to the filter: authentication, a stream slot, the policy set, the same upstream
//! call, the same decisions. Each step before streaming either hands the next one what it needs
//! or refuses with a [`Reject`], which becomes both the response and the access-log line. Once
//! records stream, a failure ends the response early (see [`super::body`]); the activity
//! view answers only at the end, so its failures are ordinary error answers.
//!
//! The decision log brackets every disclosure (see [`super::decision_log`]): once the stream slot
//! is taken, the start record is made durable while the upstream is asked, and before anything is
//! sent (if it cannot be, and the log is required, the answer is a 503 and nothing is disclosed;
//! while the log is failing, the upstream is not asked at all); the end record is
//! made durable before the answer's last byte (if it cannot be, a streamed answer is cut short
//! and an activity summary is never sent). So a client that got a whole answer finds its end
//! record in the log, and one that got any byte of it finds its start record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{self, Nothing, Response as Chunked};
use super::correlation::{Correlation, REQUEST_ID, SATGATE_REQUEST_ID};
use super::decision_log::{record, Ending, Shown, Subject};
use super::negotiate;
use super::response::{Reject, ResponseBody};
use super::steps::{
    answer_headers, authenticate, finished, policy_header, read, read_to_end, refusal, refused_unlogged, take_slot,
    unlogged, Access, Active, Answer, View,
};
use super::State;
use crate::auth::Identity;
use crate::decision::PolicyIdentity;
use crate::stream::{RecordFilter, RecordStream};
use crate::views::html::timeline::{self, Timeline};
use crate::views::{Activity, Format, Limits, Records};

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
    let own_id = HeaderValue::from_str(&access.correlation.own_id).ok();
    let format = |page| negotiate::format(req.headers(), page);
    // The one place a view is picked: from here on its type says which it is.
    let mut resp = match view {
        View::Records => {
            // A page only for a query naming one Device: its timeline.
            let device = timeline::device_of(req.uri().query());
            match (format(device.is_some()), device) {
                (Format::Html, Some(device)) => answer(state, req, access, Timeline::new(device), Format::Html).await,
                (format, _) => answer(state, req, access, Records::new(format), format).await,
            }
        }
        View::Activity => {
            let format = format(true);
            answer(state, req, access, Activity::new(Limits::DEFAULT), format).await
        }
    };
    if let Some(id) = request_id {
        resp.headers_mut().insert(REQUEST_ID, id);
    }
    if let Some(id) = own_id {
        resp.headers_mut().insert(SATGATE_REQUEST_ID, id);
    }
    resp
}

/// One request, top to bottom: authenticate, start the stream, then answer as the view does.
async fn answer<V: Answer>(
    state: &Arc<State>,
    req: &Request<Incoming>,
    access: Access,
    view: V,
    format: Format,
) -> Response<ResponseBody> {
    let identity = match authenticate(state, req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes())) {
        Ok(identity) => identity,
        Err(reject) => {
            access.log(reject.status.as_u16(), None, &reject.message, None, None);
            return reject.into_response();
        }
    };
    let view = Shown::new(identity.principal.user_id, view.for_caller(identity.principal.user_id));
    let started = match start(state, &identity, &access, view).await {
        Ok(started) => started,
        Err(reject) => {
            let policy = state.policies.current().identity().to_string();
            let principal = Some(&identity.principal);
            access.log(reject.status.as_u16(), principal, &reject.message, None, Some(&policy));
            return reject.into_response();
        }
    };
    let Started {
        mut stream,
        active,
        policy,
        deadline,
    } = started;
    let principal = identity.principal;
    let content_type = stream.filter().sink().content_type(format);
    let header_policy = policy_header(&policy);
    let (tx, body) = body::channel();
    let (state, idle) = (Arc::clone(state), state.upstream.timeouts().idle);
    let correlation = access.correlation.upstream_headers();
    if V::LIVE {
        // The records stream as they are read; the task holds the stream slot until the end.
        tokio::spawn(crate::net::CORRELATION.scope(correlation, async move {
            let result = read(&mut stream, deadline, &state, Chunked { tx: &tx, idle }).await;
            drop(active);
            let outcome = match &result {
                Ok(()) => "complete".to_owned(),
                Err(e) => format!("ended early: {e}"),
            };
            // The end record is durable before the final chunk: no whole answer without it.
            let logged = finished(&state, &access, &principal, &policy, 200, &outcome, &stream).await;
            if result.is_ok() && logged {
                tx.finish();
            }
            // Otherwise `tx` is dropped unfinished: the response ends with an error.
        }));
    } else {
        // Everything is read first; a failure is then an ordinary error answer.
        let (refusal, logged) = read_to_end(&state, &access, &principal, &policy, &mut stream, deadline, Nothing).await;
        if let Some(refusal) = refusal {
            return refusal.into_response();
        }
        if !logged {
            // Nothing of the summary has left: refuse it rather than disclose it unrecorded.
            return unlogged().into_response();
        }
        let view = stream.into_filter().into_sink();
        tokio::spawn(async move {
            let mut sent = true;
            for piece in view.pieces(format) {
                // A caller that stops reading is cut off, as on /sat/records.
                if !matches!(tokio::time::timeout(idle, tx.send(piece.into())).await, Ok(Ok(()))) {
                    sent = false;
                    break;
                }
            }
            if sent {
                tx.finish();
            }
            drop(active);
        });
    }
    let mut resp = Response::new(body.boxed());
    resp.headers_mut().extend(answer_headers(content_type, header_policy));
    resp
}

/// The upstream's answer being filtered for one caller, counted for the decision log.
type Stream<V> = RecordStream<body::Upstream, Shown<V>>;

/// A request whose upstream answered with NDJSON: its records to filter, its place among the
/// active streams, and the policy set that decides them.
struct Started<V> {
    stream: Stream<V>,
    active: Active,
    policy: PolicyIdentity,
    deadline: Option<Instant>,
}

/// Takes a stream slot, then the policy set, calls the upstream and checks its first line.
async fn start<V: Answer>(
    state: &State,
    identity: &Identity,
    access: &Access,
    view: Shown<V>,
) -> Result<Started<V>, Reject> {
    let principal = &identity.principal;
    // Before the upstream call: a refused stream costs nothing but this check.
    let slot = take_slot(state, principal)?;
    // The policy set in force now; this request keeps it even if a reload happens meanwhile.
    let engine = state.policies.current();
    let subject = access.subject(principal, engine.identity());
    let answered = logged_call(state, access, &subject).await?;
    // From here every refusal has its end record, so no start record is left open.
    let end = |reject: Reject| async {
        let line = record::end(
            &subject,
            &Ending {
                status: reject.status.as_u16(),
                outcome: &reject.message,
                stream: None,
            },
        );
        let _ = state.decision_log.append(line).await;
        reject
    };
    let (upstream, latency) = match answered {
        Ok(answer) => answer,
        Err(e) => {
            let code = if e.status() == StatusCode::GATEWAY_TIMEOUT {
                "upstream_timeout"
            } else {
                "bad_gateway"
            };
            return Err(end(Reject::new(e.status(), code, e.to_string())).await);
        }
    };
    state.metrics.upstream_latency.observe(latency.as_secs_f64());

    let deadline = identity.expires.map(|at| {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Instant::now() + left
    });
    let frames = body::Upstream {
        body: upstream.into_body(),
        idle: state.upstream.timeouts().idle,
    };
    let filter = RecordFilter::new(engine.for_principal(principal), view);
    let mut stream = RecordStream::new(frames, filter, state.max_line_bytes);
    if let Err(e) = stream.check_first_line().await {
        return Err(end(refusal(&e)).await);
    }
    Ok(Started {
        stream,
        active: Active::new(slot, &state.metrics),
        policy: engine.identity().clone(),
        deadline,
    })
}

/// The start record and the upstream call. Before anything can be disclosed, the record that it
/// may be: made durable while the upstream is asked (nothing reaches the caller before both are
/// done), or, while the log is failing, first, so that a refused request costs the upstream
/// nothing. A start record that cannot be written refuses the request (503) when the log is
/// required; an upstream answer already there is then dropped unread.
async fn logged_call(
    state: &State,
    access: &Access,
    subject: &Subject<'_>,
) -> Result<Result<(Response<Incoming>, std::time::Duration), crate::upstream::UpstreamError>, Reject> {
    let log_start = state.decision_log.append(record::start(subject));
    let upstream_headers = access.correlation.upstream_headers();
    let call = state.upstream.records(access.query.as_deref(), upstream_headers);
    let (logged, answered) = if state.decision_log.unwritable().is_some() {
        match log_start.await {
            Err(_) if state.decision_log.required() => return Err(refused_unlogged(state)),
            logged => (logged, call.await),
        }
    } else {
        tokio::join!(log_start, call)
    };
    if let Err(e) = logged {
        if state.decision_log.required() {
            return Err(refused_unlogged(state));
        }
        tracing::warn!(error = %e, "decision log start record not written; serving (--decision-log-required=false)");
    }
    Ok(answered)
}
