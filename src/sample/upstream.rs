//! A stand-in for the SSI audit endpoint, for the demo and for trying satgate by hand:
//! `GET /sat/records[?deviceId=EUI][&limit=N]` streams generated records as NDJSON.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::model::Eui64;
use crate::server::ResponseBody;

/// Serves `lines` (one NDJSON record each) until the task is dropped.
pub async fn serve(listener: TcpListener, lines: Arc<Vec<String>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let lines = Arc::clone(&lines);
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(Arc::clone(&lines), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(lines: Arc<Vec<String>>, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
    if req.uri().path() != "/sat/records" {
        let body = Full::new(Bytes::from_static(b"not found\n"))
            .map_err(|never| match never {})
            .boxed();
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(resp);
    }
    let mut device = None;
    let mut limit = usize::MAX;
    for pair in req.uri().query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("deviceId", v)) => device = Eui64::parse(v).ok().map(|d| d.to_string()),
            Some(("limit", v)) => limit = v.parse().unwrap_or(usize::MAX),
            _ => {}
        }
    }
    let (tx, body) = crate::stream::body::channel();
    tokio::spawn(async move {
        let mut chunk = String::with_capacity(64 * 1024);
        let wanted = lines
            .iter()
            .filter(|l| device.as_ref().is_none_or(|d| l.contains(d.as_str())))
            .take(limit);
        for line in wanted {
            chunk.push_str(line);
            chunk.push('\n');
            if chunk.len() >= 60 * 1024 && tx.send(Bytes::from(std::mem::take(&mut chunk))).await.is_err() {
                return;
            }
        }
        if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
            return;
        }
        tx.finish();
    });
    let mut resp = Response::new(body.boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
