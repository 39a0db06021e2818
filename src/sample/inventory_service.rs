//! A stand-in for the inventory service behind `--inventory-url`, answering from an inventory
//! document: `GET /devices/{deviceId}` gives that Device and its meter points, or 404.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The answer for one Device: an inventory document with just it and its meter points.
pub fn answer(inventory: &Value, device_id: &str) -> Option<String> {
    let device = inventory["devices"]
        .as_array()?
        .iter()
        .find(|d| d["deviceId"] == device_id)?;
    let mpxns = device["mpxns"].as_array()?;
    let points: Vec<&Value> = inventory["meterPoints"]
        .as_array()?
        .iter()
        .filter(|mp| mpxns.contains(&mp["mpxn"]))
        .collect();
    Some(json!({"meterPoints": points, "devices": [device]}).to_string())
}

/// Serves `inventory` until the task is dropped.
pub async fn serve(listener: TcpListener, inventory: Arc<Value>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let inventory = Arc::clone(&inventory);
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let found = req
                    .uri()
                    .path()
                    .strip_prefix("/devices/")
                    .and_then(|id| answer(&inventory, id));
                let (status, body) = match found {
                    Some(body) => (http::StatusCode::OK, body),
                    None => (http::StatusCode::NOT_FOUND, String::new()),
                };
                let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = status;
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
