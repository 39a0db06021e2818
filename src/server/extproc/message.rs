//! The ext_proc messages satgate reads and writes, and nothing else: the headers Envoy sends (in
//! `value` or `raw_value`), the answers to each phase, refusals as `ImmediateResponse`s and the
//! body chunks of `FULL_DUPLEX_STREAMED` mode.

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderMap as EnvoyHeaders, HeaderValue as EnvoyHeader, HeaderValueOption,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, common_response, processing_response::Response as Answer, BodyMutation, BodyResponse,
    CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse, ProcessingRequest, ProcessingResponse,
    StreamedBodyResponse, TrailersResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Value};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::net::SocketAddr;

use crate::server::response::Reject;

/// A message's headers: the pseudo-headers Envoy adds (`:path`, `:method`, `:status`) apart, the
/// rest as a `HeaderMap` for the code `serve` shares. A header Envoy sends that is not a valid
/// HTTP header is left out, as hyper would refuse it: an unreadable `Authorization` is a missing
/// one (401), never a reason to let the request through.
pub struct Headers {
    pub path: Option<String>,
    pub method: Option<String>,
    pub status: Option<String>,
    pub map: HeaderMap,
    /// Every name Envoy sent, pseudo-headers left out, lowercase: what must go (see [`replace_all`]).
    pub names: Vec<String>,
}

impl Headers {
    pub fn read(headers: Option<&EnvoyHeaders>) -> Self {
        let mut out = Headers {
            path: None,
            method: None,
            status: None,
            map: HeaderMap::new(),
            names: Vec::new(),
        };
        for h in headers.map(|h| h.headers.as_slice()).unwrap_or_default() {
            // Envoy sends `raw_value` (bytes); older versions `value`.
            let value: &[u8] = if h.raw_value.is_empty() {
                h.value.as_bytes()
            } else {
                &h.raw_value
            };
            let key = h.key.to_ascii_lowercase();
            match key.as_str() {
                ":path" => out.path = String::from_utf8(value.to_vec()).ok(),
                ":method" => out.method = String::from_utf8(value.to_vec()).ok(),
                ":status" => out.status = String::from_utf8(value.to_vec()).ok(),
                k if k.starts_with(':') => {}
                _ => {
                    if !out.names.contains(&key) {
                        out.names.push(key.clone());
                    }
                    if let (Ok(name), Ok(value)) =
                        (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_bytes(value))
                    {
                        out.map.append(name, value);
                    }
                }
            }
        }
        out
    }
}

/// Where Envoy's `jwt_authn` filter puts a verified token's payload (`payload_in_metadata`),
/// forwarded to satgate by ext_proc's `metadata_options`.
pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
pub const JWT_PAYLOAD: &str = "jwt_payload";

/// The verified token payload in the request's dynamic metadata, as JSON; `None` when Envoy
/// sent none. Dynamic metadata is set by Envoy's filters, never by a caller.
pub fn verified_payload(request: &ProcessingRequest) -> Option<serde_json::Value> {
    let metadata = request.metadata_context.as_ref()?.filter_metadata.get(JWT_AUTHN)?;
    let payload = metadata.fields.get(JWT_PAYLOAD)?;
    Some(json(payload))
}

/// A protobuf `Value` as JSON (numbers are doubles, as in protobuf).
fn json(value: &Value) -> serde_json::Value {
    match &value.kind {
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, serde_json::Value::Number)
        }
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => {
            serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), json(v))).collect())
        }
        Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(json).collect()),
        Some(Kind::NullValue(_)) | None => serde_json::Value::Null,
    }
}

fn option(name: &str, value: &[u8]) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key: name.to_owned(),
            raw_value: value.to_vec(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A mutation that removes every header in `names` (the message's own) that `set` does not name,
/// then sets `set`: an allowlist by construction, since whatever the other side sent that
/// satgate did not write is removed, whatever it is called.
pub fn replace_all(names: &[String], set: &[(HeaderName, HeaderValue)]) -> HeaderMutation {
    HeaderMutation {
        remove_headers: names
            .iter()
            .filter(|n| !set.iter().any(|(k, _)| k.as_str() == n.as_str()))
            .cloned()
            .collect(),
        set_headers: set.iter().map(|(k, v)| option(k.as_str(), v.as_bytes())).collect(),
    }
}

fn common(mutation: HeaderMutation) -> Option<CommonResponse> {
    Some(CommonResponse {
        status: common_response::ResponseStatus::Continue as i32,
        header_mutation: Some(mutation),
        ..Default::default()
    })
}

/// Lets the request go on to the upstream with these headers.
pub fn request_headers(mutation: HeaderMutation) -> ProcessingResponse {
    answer(Answer::RequestHeaders(HeadersResponse {
        response: common(mutation),
    }))
}

/// Lets the response go on to the caller with these headers; its body follows in chunks.
pub fn response_headers(mutation: HeaderMutation) -> ProcessingResponse {
    answer(Answer::ResponseHeaders(HeadersResponse {
        response: common(mutation),
    }))
}

/// One chunk of the filtered body; `end` with the last.
pub fn body_chunk(body: Vec<u8>, end: bool) -> ProcessingResponse {
    answer(Answer::ResponseBody(BodyResponse {
        response: Some(CommonResponse {
            body_mutation: Some(BodyMutation {
                mutation: Some(body_mutation::Mutation::StreamedResponse(StreamedBodyResponse {
                    body,
                    end_of_stream: end,
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }),
    }))
}

/// Drops every trailer the upstream sent (`serve` sends none either).
pub fn no_trailers(names: &[String]) -> ProcessingResponse {
    answer(Answer::ResponseTrailers(TrailersResponse {
        header_mutation: Some(replace_all(names, &[])),
    }))
}

/// A whole answer in place of the upstream's: a refusal, or a view answered at the end.
pub fn immediate(status: u16, headers: &[(HeaderName, HeaderValue)], body: Vec<u8>) -> ProcessingResponse {
    answer(Answer::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(status),
        }),
        headers: Some(HeaderMutation {
            set_headers: headers.iter().map(|(k, v)| option(k.as_str(), v.as_bytes())).collect(),
            remove_headers: Vec::new(),
        }),
        body,
        // Envoy's `%RESPONSE_CODE_DETAILS%`: who answered.
        details: "satgate".into(),
        ..Default::default()
    }))
}

/// A refusal, exactly as `serve` answers it: same status, JSON body and `Retry-After`.
pub fn refusal(reject: &Reject, extra: &[(HeaderName, HeaderValue)]) -> ProcessingResponse {
    let body = serde_json::json!({"error": reject.code, "message": reject.message}).to_string();
    let mut headers = vec![(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    if let Some(s) = reject.retry_after {
        headers.push((http::header::RETRY_AFTER, HeaderValue::from(s)));
    }
    headers.extend_from_slice(extra);
    immediate(reject.status.as_u16(), &headers, body.into_bytes())
}

fn answer(response: Answer) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        ..Default::default()
    }
}

/// The caller's address as Envoy saw it (`request_attributes: ["source.address"]`), when sent.
pub fn source_address(first: &ProcessingRequest) -> Option<SocketAddr> {
    first
        .attributes
        .values()
        .find_map(|s| match s.fields.get("source.address")?.kind.as_ref()? {
            Kind::StringValue(a) => a.parse().ok(),
            _ => None,
        })
}

/// A refusal when Envoy says it will not wait for satgate's answers, or will not send the body:
/// then records would reach the caller unfiltered. Envoy sends its modes on the first message.
pub fn unsafe_mode(first: &ProcessingRequest) -> Option<Reject> {
    let full_duplex = first
        .protocol_config
        .as_ref()
        .is_some_and(|c| c.response_body_mode == BodySendMode::FullDuplexStreamed as i32);
    (first.observability_mode || !full_duplex).then(|| {
        Reject::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "misconfigured",
            "the proxy in front of satgate is misconfigured; nothing was disclosed",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envoy(pairs: &[(&str, &[u8], bool)]) -> EnvoyHeaders {
        EnvoyHeaders {
            headers: pairs
                .iter()
                .map(|(k, v, raw)| EnvoyHeader {
                    key: (*k).into(),
                    value: if *raw {
                        String::new()
                    } else {
                        String::from_utf8(v.to_vec()).unwrap()
                    },
                    raw_value: if *raw { v.to_vec() } else { Vec::new() },
                })
                .collect(),
        }
    }

    #[test]
    fn headers_are_read_from_either_field_and_bad_ones_are_left_out() {
        let h = Headers::read(Some(&envoy(&[
            (":path", b"/sat/records?x=1", true),
            (":method", b"GET", false),
            ("Authorization", b"Bearer a.b.c", true),
            ("x-bad", b"a\nb", true),
            ("accept", b"text/csv", false),
        ])));
        assert_eq!(h.path.as_deref(), Some("/sat/records?x=1"));
        assert_eq!(h.method.as_deref(), Some("GET"));
        assert_eq!(h.map.get("authorization").unwrap(), "Bearer a.b.c");
        assert!(h.map.get("x-bad").is_none(), "a value hyper would refuse is not read");
        assert_eq!(
            h.names,
            ["authorization", "x-bad", "accept"],
            "but it is named, to be removed"
        );
    }

    /// Whatever names the other side sent, every one not set by satgate is removed.
    #[test]
    fn replace_all_removes_everything_it_does_not_set() {
        let names: Vec<String> = ["content-length", "x-secret", "content-type", "set-cookie"]
            .map(String::from)
            .into();
        let m = replace_all(
            &names,
            &[(http::header::CONTENT_TYPE, HeaderValue::from_static("text/csv"))],
        );
        assert_eq!(m.remove_headers, ["content-length", "x-secret", "set-cookie"]);
        assert_eq!(m.set_headers.len(), 1);
        let set = m.set_headers[0].header.as_ref().unwrap();
        assert_eq!(
            (set.key.as_str(), set.raw_value.as_slice()),
            ("content-type", &b"text/csv"[..])
        );
    }
}
