//! Request correlation and W3C trace context.
//!
//! Every `/sat/*` request has an id: the caller's `X-Request-Id` when it is a sane token (1 to 128
//! characters of `A-Z a-z 0-9 . _ - :`), otherwise a new one. It is echoed on the answer and is
//! in the access-log line. A caller's `traceparent` (W3C Trace Context, version 00) is continued:
//! the upstream gets the same trace id with satgate's own span id as parent, and `tracestate` as
//! it came; without a valid one, satgate starts a new trace. The trace id is in the access log.
//!
//! satgate also gives every request an id of its own, never taken from the caller: the key of its
//! decision records (a caller cannot make its entries share another's key), returned as
//! `Satgate-Request-Id`. The caller's id is kept beside it.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// satgate's own id for the request, on every answer to `/sat/*`.
pub const SATGATE_REQUEST_ID: HeaderName = HeaderName::from_static("satgate-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// One request's id and trace context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correlation {
    /// The id echoed on the answer and sent upstream: the caller's when sane, else `own_id`.
    pub request_id: String,
    /// satgate's own id, always new: 32 lowercase hex digits.
    pub own_id: String,
    /// The caller's `X-Request-Id`, when it is a sane token.
    pub caller_id: Option<String>,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// satgate's span in the trace, the parent of the upstream call: 16 hex digits.
    pub span_id: String,
    sampled: bool,
    tracestate: Option<HeaderValue>,
}

impl Correlation {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let own_id = hex(&random::<16>());
        let caller_id = headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| sane_id(v))
            .map(str::to_owned);
        let request_id = caller_id.clone().unwrap_or_else(|| own_id.clone());
        let parent = headers
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let tracestate = parent
            .is_some()
            .then(|| headers.get(&TRACESTATE).filter(|v| v.len() <= 512).cloned())
            .flatten();
        let (trace_id, sampled) = parent.unwrap_or_else(|| (hex(&random::<16>()), false));
        Self {
            request_id,
            own_id,
            caller_id,
            trace_id,
            span_id: hex(&random::<8>()),
            sampled,
            tracestate,
        }
    }

    /// The headers the upstream call carries: `traceparent` (and `tracestate`) and the request id.
    pub fn upstream_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let flags = if self.sampled { "01" } else { "00" };
        let mut out = Vec::with_capacity(3);
        if let Ok(v) = HeaderValue::from_str(&format!("00-{}-{}-{flags}", self.trace_id, self.span_id)) {
            out.push((TRACEPARENT, v));
        }
        if let Some(state) = &self.tracestate {
            out.push((TRACESTATE, state.clone()));
        }
        if let Ok(v) = HeaderValue::from_str(&self.request_id) {
            out.push((REQUEST_ID, v));
        }
        out
    }
}

fn sane_id(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero: the trace id and
/// whether it is sampled.
fn parse_traceparent(v: &str) -> Option<(String, bool)> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex =
        |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = version == "00"
        && parts.next().is_none()
        && lower_hex(trace, 32)
        && lower_hex(parent, 16)
        && lower_hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
    valid.then(|| (trace.to_owned(), sampled))
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Ids only need to be unique: should the OS source fail, fall back to the clock.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_sane_request_id_is_kept_and_anything_else_replaced() {
        assert_eq!(
            Correlation::from_headers(&headers(&[("x-request-id", "abc-123:X.y_z")])).request_id,
            "abc-123:X.y_z"
        );
        for bad in ["", "has space", "semi;colon", &"x".repeat(129)] {
            let id = Correlation::from_headers(&headers(&[("x-request-id", bad)])).request_id;
            assert!(id != bad && id.len() == 32, "{bad:?} -> {id}");
        }
        let (a, b) = (
            Correlation::from_headers(&HeaderMap::new()),
            Correlation::from_headers(&HeaderMap::new()),
        );
        assert_ne!(a.request_id, b.request_id);
        assert_eq!(
            (a.request_id.as_str(), a.caller_id.as_deref()),
            (a.own_id.as_str(), None)
        );
        // satgate's own id never comes from the caller, sane or not.
        let c = Correlation::from_headers(&headers(&[("x-request-id", "abc")]));
        assert_eq!(c.caller_id.as_deref(), Some("abc"));
        assert!(c.own_id != "abc" && c.own_id.len() == 32);
    }

    #[test]
    fn a_valid_traceparent_is_continued_and_an_invalid_one_replaced() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = Correlation::from_headers(&headers(&[("traceparent", tp), ("tracestate", "vendor=1")]));
        assert_eq!(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let up = c.upstream_headers();
        let sent = up
            .iter()
            .find(|(k, _)| k == TRACEPARENT)
            .unwrap()
            .1
            .to_str()
            .unwrap()
            .to_owned();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"));
        assert!(!sent.contains("00f067aa0ba902b7"), "satgate's own span is the parent");
        assert!(up.iter().any(|(k, v)| k == TRACESTATE && v == "vendor=1"));
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            let c = Correlation::from_headers(&headers(&[("traceparent", bad), ("tracestate", "vendor=1")]));
            assert_ne!(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert_eq!(c.trace_id.len(), 32);
            assert!(
                !c.upstream_headers().iter().any(|(k, _)| k == TRACESTATE),
                "no tracestate for a new trace"
            );
        }
    }
}
