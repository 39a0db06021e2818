//! The checks the `ext_proc_message` fuzz target runs (and `cargo test`, over a few inputs): any
//! bytes as a message from Envoy (decoded as protobuf), or any JSON as the verified token payload
//! of one, then read the way `exchange` reads it.
//!
//! - The headers: no panic; no pseudo-header among the names to replace; every header read is one
//!   of those names, so whatever satgate removes covers whatever it read.
//! - The mode check: a request is let through only if Envoy says `FULL_DUPLEX_STREAMED` response
//!   bodies and not observability mode (read here independently of `message`).
//! - The verified token payload, when the message carries one: taken by an authenticator set for
//!   `--jwt-from-envoy` only if the claims are what docs/contract.md §3 requires, checked here
//!   independently (`sub` an EUI-64, `role` one of the seven, `party` a string, a numeric `exp`
//!   not past, `iss` and `aud` the configured ones); then the principal is exactly theirs. An
//!   authenticator with a key of its own never takes a payload.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{processing_request::Request as Phase, ProcessingRequest};
use prost::Message;
use serde_json::Value;

use super::message;
use crate::auth::{Authenticator, JwtKey};
use crate::model::Principal;

const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "satgate";

fn from_envoy() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::new(JwtKey::EnvoyJwtAuthn, Some(ISSUER), Some(AUDIENCE)).expect("no key to load")
    })
}

fn keyed() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::with_key(
            jsonwebtoken::DecodingKey::from_secret(b"satgate fuzz secret, 32 bytes or more"),
            jsonwebtoken::Algorithm::HS256,
            Some(ISSUER),
            Some(AUDIENCE),
        )
    })
}

/// The first byte picks what the rest is: `0`, a protobuf `ProcessingRequest` as Envoy would
/// send it; `1`, JSON taken as the verified token payload of an otherwise well-formed request
/// (so the claim rules meet every shape of payload, not only what random protobuf reaches).
pub fn fuzz_check(data: &[u8]) {
    let request = match data.split_first() {
        Some((0, rest)) => ProcessingRequest::decode(rest).ok(),
        Some((1, rest)) => serde_json::from_slice::<Value>(rest).ok().map(|p| with_payload(&p)),
        _ => None,
    };
    if let Some(request) = request {
        check(&request);
    }
}

/// A request whose dynamic metadata holds `payload` where `jwt_authn` puts it.
fn with_payload(payload: &Value) -> ProcessingRequest {
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::Struct;
    let namespace = Struct {
        fields: [(message::JWT_PAYLOAD.to_owned(), pb(payload))].into(),
    };
    ProcessingRequest {
        metadata_context: Some(Metadata {
            filter_metadata: [(message::JWT_AUTHN.to_owned(), namespace)].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// JSON as a protobuf `Value` (as Envoy stores a JWT payload).
fn pb(v: &Value) -> envoy_types::pb::google::protobuf::Value {
    use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value as Pb};
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(pb).collect(),
        }),
        Value::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), pb(v))).collect(),
        }),
    };
    Pb { kind: Some(kind) }
}

fn check(request: &ProcessingRequest) {
    let headers = match &request.request {
        Some(Phase::RequestHeaders(h) | Phase::ResponseHeaders(h)) => h.headers.as_ref(),
        Some(Phase::RequestTrailers(t) | Phase::ResponseTrailers(t)) => t.trailers.as_ref(),
        _ => None,
    };
    let read = message::Headers::read(headers);
    for name in &read.names {
        assert!(
            !name.starts_with(':'),
            "a pseudo-header among the names to replace: {name:?}"
        );
        assert_eq!(name, &name.to_ascii_lowercase());
    }
    for name in read.map.keys() {
        assert!(
            read.names.iter().any(|n| n == name.as_str()),
            "{name} read but not named"
        );
    }

    let full_duplex = request
        .protocol_config
        .as_ref()
        .is_some_and(|c| c.response_body_mode == BodySendMode::FullDuplexStreamed as i32);
    assert_eq!(
        message::unsafe_mode(request).is_none(),
        full_duplex && !request.observability_mode,
        "the mode check"
    );
    let _ = message::source_address(request);

    let payload = message::verified_payload(request);
    assert!(
        keyed().identify_verified(payload.as_ref()).is_err(),
        "a keyed satgate took a payload"
    );
    if let Ok(identity) = from_envoy().identify_verified(payload.as_ref()) {
        let p = payload.as_ref().expect("accepted without a payload");
        let expected = acceptable(p).expect("accepted claims the contract refuses");
        assert_eq!(identity.principal, expected);
    }
}

/// The principal docs/contract.md §3 gives these claims, or `None`.
fn acceptable(p: &Value) -> Option<Principal> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    let exp = p.get("exp")?.as_f64()?;
    if exp + 30.0 < now || p.get("iss")?.as_str()? != ISSUER {
        return None;
    }
    let aud_ok = match p.get("aud")? {
        Value::String(a) => a == AUDIENCE,
        Value::Array(all) => all.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    if !aud_ok {
        return None;
    }
    let text = |k: &str| p.get(k).and_then(Value::as_str);
    Principal::from_claims(text("sub")?, text("role")?, text("party")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
    use envoy_types::pb::envoy::service::ext_proc::v3::{HttpHeaders, ProtocolConfiguration};
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value as Pb};

    fn text(s: &str) -> Pb {
        Pb {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    fn encoded(fields: &[(&str, Pb)]) -> Vec<u8> {
        let payload = Struct {
            fields: fields.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        };
        let namespace = Struct {
            fields: [(
                message::JWT_PAYLOAD.to_owned(),
                Pb {
                    kind: Some(Kind::StructValue(payload)),
                },
            )]
            .into(),
        };
        ProcessingRequest {
            request: Some(Phase::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![HeaderValue {
                        key: ":path".into(),
                        raw_value: b"/sat/records".to_vec(),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            })),
            metadata_context: Some(Metadata {
                filter_metadata: [(message::JWT_AUTHN.to_owned(), namespace)].into(),
                ..Default::default()
            }),
            protocol_config: Some(ProtocolConfiguration {
                response_body_mode: BodySendMode::FullDuplexStreamed as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn the_checks_hold_on_accepted_and_refused_messages() {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() + 600.0;
        let number = |n: f64| Pb {
            kind: Some(Kind::NumberValue(n)),
        };
        let good = [
            ("sub", text("90-B3-D5-1F-30-01-00-00")),
            ("role", text("IS")),
            ("party", text("SUPA")),
            ("exp", number(exp)),
            ("iss", text(ISSUER)),
            ("aud", text(AUDIENCE)),
        ];
        let input = [&[0u8][..], &encoded(&good)].concat();
        let request = ProcessingRequest::decode(&input[1..]).unwrap();
        let payload = message::verified_payload(&request);
        assert!(from_envoy().identify_verified(payload.as_ref()).is_ok(), "{payload:?}");
        fuzz_check(&input);
        for (i, bad) in [text("XX"), text("other"), number(exp - 7200.0)]
            .into_iter()
            .enumerate()
        {
            let mut fields = good.clone();
            fields[[1, 5, 3][i]].1 = bad;
            fuzz_check(&[&[0u8][..], &encoded(&fields)].concat());
        }
        for data in [&b""[..], b"\x00\x0a\x03abc", &input[..input.len() / 2], &[0xff; 16]] {
            fuzz_check(data);
        }
        let json = format!(
            r#"{{"sub":"90-B3-D5-1F-30-01-00-00","role":"IS","party":"SUPA","exp":{exp},"iss":"{ISSUER}","aud":["x","{AUDIENCE}"]}}"#
        );
        let request = with_payload(&serde_json::from_str(&json).unwrap());
        assert!(from_envoy()
            .identify_verified(message::verified_payload(&request).as_ref())
            .is_ok());
        for payload in [
            json.clone(),
            json.replace("SUPA", ""),
            json.replace("exp", "e"),
            "[]".into(),
            "7".into(),
        ] {
            fuzz_check(&[&[1u8][..], payload.as_bytes()].concat());
        }
    }
}
