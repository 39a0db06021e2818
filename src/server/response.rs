//! Response bodies: JSON answers and the one refusal type every step of a request returns, so
//! the status, the error code, the message and the access-log line always agree.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use serde_json::json;

pub type ResponseBody = BoxBody<Bytes, std::io::Error>;

/// A request refused before any record was sent. The message is ours: it never carries record
/// data, token text or claim values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: StatusCode,
    /// Stable, machine-readable (`unauthenticated`, `busy`, `bad_gateway`, ...).
    pub code: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After` on 429 and 503.
    pub retry_after: Option<u32>,
}

impl Reject {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        let mut resp = error(self.status, self.code, &self.message);
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

pub fn full(text: impl Into<Bytes>) -> ResponseBody {
    Full::new(text.into()).map_err(|never| match never {}).boxed()
}

pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response<ResponseBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An error body (`{"error","message"}`, docs/contract.md §5). `message` is ours, never record data.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    json_response(status, json!({"error": code, "message": message}))
}
