//! `satgate ext-proc`: the sidecar as Envoy's external processor. The same configuration as
//! `serve` (file, environment, flags), the same start-up and reloads; `--listen` is the gRPC
//! address Envoy's `ext_proc` filter calls, `--ops-listen` the operations endpoints, and
//! `--upstream` the SSI endpoint Envoy routes to (probed by `/readyz`; Envoy makes the calls).

use std::sync::Arc;

use tokio::sync::watch;

use super::serve::{runtime, shutdown_signal, start, StartError};
use super::{CmdError, Exit};
use crate::config::{ServeArgs, ServeConfig};
use crate::server;

pub fn run(args: &ServeArgs) -> Result<Exit, CmdError> {
    let config = ServeConfig::resolve(args).map_err(StartError::from)?;
    check(&config)?;
    let runtime = runtime(&config)?;
    runtime.block_on(async {
        let (state, listeners) = start(&config).await?;
        super::serve::spawn_background(&state, config.reload_interval);
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: no new streams; waiting for streams in flight");
            let _ = stop.send(true);
        });
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let ops = match listeners.ops {
            Some(ops) => {
                tracing::info!(grpc = %config.listen, ops = ?config.ops_listen, upstream = %config.upstream, "satgate ext-proc serving");
                Some(tokio::spawn(server::run_ops(ops, Arc::clone(&state), until(stopped.clone()))))
            }
            None => {
                tracing::warn!(grpc = %config.listen, "satgate ext-proc serving, without --ops-listen: no /readyz or /metrics");
                None
            }
        };
        // Streams in flight finish, within the grace period.
        let grace = config.shutdown_grace;
        let past_grace = {
            let stopped = stopped.clone();
            async move {
                until(stopped).await;
                tokio::time::sleep(grace).await;
            }
        };
        let served = tokio::select! {
            served = server::extproc::run(listeners.callers, state, until(stopped)) => served,
            () = past_grace => {
                tracing::warn!(?grace, "grace period over; closing remaining streams");
                Ok(())
            }
        };
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        served.map_err(|e| CmdError::new(format!("ext-proc: {e}")))?;
        Ok(Exit::Ok)
    })
}

/// What `serve` allows but an external processor must not have: a gRPC listener off the loopback
/// (it has no authentication; only the pod's Envoy may reach it), and TLS for callers (Envoy
/// terminates it).
fn check(config: &ServeConfig) -> Result<(), CmdError> {
    if !config.listen.ip().is_loopback() {
        return Err(CmdError::new(format!(
            "configuration: listen: {} is not a loopback address; ext-proc's gRPC listener has no \
             authentication, so only the pod's own Envoy may reach it (127.0.0.1 or ::1)",
            config.listen
        )));
    }
    if config.tls.is_some() {
        return Err(CmdError::new(
            "configuration: tls-cert-file: ext-proc has no callers' listener; Envoy terminates callers' TLS",
        ));
    }
    Ok(())
}
