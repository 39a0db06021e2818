//! `satgate serve`: the sidecar.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::Exit;
use crate::auth::Authenticator;
use crate::config::{LogFormat, OwnershipSourceConfig, ServeArgs, ServeConfig};
use crate::decision::PolicyStore;
use crate::metrics::Metrics;
use crate::ownership::{CachedSource, HttpSource, InventoryFile, OwnershipSource};
use crate::server::limits::StreamBudget;
use crate::server::{self, Listeners, State};
use crate::tls::ServerTls;
use crate::upstream::{Timeouts, Upstream};

pub fn run(args: &ServeArgs) -> Exit {
    let config = match ServeConfig::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: configuration: {e}");
            return Exit::Error;
        }
    };
    init_logging(config.log_format, "info");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::Error;
        }
    };
    runtime.block_on(async {
        let (state, listeners) = match start(&config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Error;
            }
        };
        server::spawn_reloader(Arc::clone(&state), config.reload_interval);
        spawn_sighup_invalidation(Arc::clone(&state));
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        match config.ops_listen {
            Some(ops) => tracing::info!(listen = %config.listen, scheme, %ops, upstream = %config.upstream, "satgate serving"),
            None => tracing::warn!(
                listen = %config.listen, scheme, upstream = %config.upstream,
                "satgate serving; /metrics, /readyz and /admin share the callers' listener (set --ops-listen to move them)"
            ),
        }
        server::run(listeners, state, shutdown_signal(), config.shutdown_grace).await;
        Exit::Ok
    })
}

/// Loads everything the configuration names and binds the listeners. Any failure is a start-up
/// error that names what is wrong.
pub async fn start(config: &ServeConfig) -> Result<(Arc<State>, Listeners), String> {
    let metrics = Arc::new(Metrics::new());
    let policies = PolicyStore::load(&config.policies, &config.schema, metrics.decisions.clone())
        .map_err(|e| format!("policies:\n{e}"))?;
    let mut inventory_service = None;
    let (inventory, source): (Option<Arc<InventoryFile>>, Arc<dyn OwnershipSource>) = match &config.ownership {
        OwnershipSourceConfig::File(path) => {
            let (file, warnings) = InventoryFile::load(path).map_err(|e| format!("inventory: {e}"))?;
            for w in warnings.iter().take(50) {
                tracing::warn!(entry = %w, "inventory entry left out");
            }
            let file = Arc::new(file);
            (Some(Arc::clone(&file)), file)
        }
        OwnershipSourceConfig::Http(url, settings) => {
            let http = HttpSource::new(url, settings.clone()).map_err(|e| format!("inventory-url: {e}"))?;
            inventory_service = http.authority();
            (None, Arc::new(http))
        }
    };
    let ownership = Arc::new(CachedSource::new(
        source,
        config.ownership_cache.clone(),
        metrics.ownership.clone(),
    ));
    let admin_token = match &config.admin_token_file {
        None => None,
        Some(path) => {
            let token = std::fs::read(path).map_err(|e| format!("admin-token-file: {}: {e}", path.display()))?;
            let token = token.trim_ascii().to_vec();
            if token.len() < 16 {
                return Err("admin-token-file: the token must be at least 16 bytes".into());
            }
            Some(token)
        }
    };
    let auth = Authenticator::new(
        config.jwt_key.clone(),
        config.jwt_issuer.as_deref(),
        config.jwt_audience.as_deref(),
    )
    .map_err(|e| format!("jwt: {e}"))?;
    let timeouts = Timeouts {
        connect: config.connect_timeout,
        first_byte: config.first_byte_timeout,
        idle: config.idle_timeout,
    };
    let upstream = Upstream::new(&config.upstream, timeouts).map_err(|e| format!("upstream: {e}"))?;
    let tls = config.tls.clone().map(ServerTls::load).transpose()?;
    let worst = crate::server::limits::worst_case_bytes(
        &config.stream_limits,
        config.max_line_bytes,
        config.ownership_cache.capacity,
    );
    tracing::info!(
        max_streams = config.stream_limits.max_streams,
        max_streams_per_user = config.stream_limits.max_streams_per_user,
        worst_case_memory_mib = worst >> 20,
        "stream limits"
    );
    let state = Arc::new(State {
        auth,
        policies,
        inventory,
        ownership,
        inventory_service,
        upstream,
        metrics,
        max_line_bytes: config.max_line_bytes,
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
        streams: StreamBudget::new(config.stream_limits),
        separate_ops: config.ops_listen.is_some(),
        admin_token,
        tls,
    });
    let callers = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listen: cannot bind {}: {e}", config.listen))?;
    let ops = match config.ops_listen {
        None => None,
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("ops-listen: cannot bind {addr}: {e}"))?,
        ),
    };
    Ok((state, Listeners { callers, ops }))
}

/// SIGHUP forgets every cached owner: for operators who know registrations just changed.
fn spawn_sighup_invalidation(state: Arc<State>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            state.ownership.invalidate_all();
            tracing::info!("SIGHUP: ownership cache cleared");
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Logs to stderr; `RUST_LOG` overrides `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
