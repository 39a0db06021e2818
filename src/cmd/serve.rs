//! `satgate serve`: the sidecar.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::{CmdError, Exit};
use crate::auth::{Authenticator, JwtKey, KeyError};
use crate::config::{ConfigError, LogFormat, ServeArgs, ServeConfig};
use crate::decision::store::PolicySource;
use crate::decision::{LoadError, PolicyStore};
use crate::metrics::Metrics;
use crate::net::UrlError;
use crate::ownership::{CachedSource, OpenError};
use crate::server::decision_log::{DecisionLog, Settings};
use crate::server::limits::StreamBudget;
use crate::server::{self, Listeners, State};
use crate::tls::client::ClientTls;
use crate::tls::{ServerTls, TlsError};
use crate::upstream::{Timeouts, Upstream};

/// Why the sidecar could not start: each names what it is about.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("policies:\n{0}")]
    Policies(#[from] LoadError),
    #[error("{0}")]
    Ownership(#[from] OpenError),
    #[error("upstream: {0}")]
    Upstream(UrlError),
    #[error("jwt: {0}")]
    Jwt(#[from] KeyError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("admin-token-file: {0}")]
    AdminToken(String),
    #[error("{setting}: cannot bind {addr}: {source}")]
    Bind {
        setting: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("decision-log: {0}")]
    DecisionLog(String),
}

pub fn run(args: &ServeArgs) -> Result<Exit, CmdError> {
    let config = ServeConfig::resolve(args).map_err(StartError::from)?;
    if config.jwt_key == JwtKey::EnvoyJwtAuthn {
        // Callers reach `serve` directly: nothing in front has verified their tokens.
        return Err(CmdError::new(
            "configuration: jwt-from-envoy: only for ext-proc, behind Envoy's jwt_authn filter",
        ));
    }
    let runtime = runtime(&config)?;
    runtime.block_on(async {
        let (state, listeners) = start(&config).await?;
        spawn_background(&state, config.reload_interval);
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        match config.ops_listen {
            Some(ops) => tracing::info!(listen = %config.listen, scheme, %ops, upstream = %config.upstream, "satgate serving"),
            None => tracing::warn!(
                listen = %config.listen, scheme, upstream = %config.upstream,
                "satgate serving; /metrics, /readyz and /admin share the callers' listener (set --ops-listen to move them)"
            ),
        }
        server::run(listeners, state, shutdown_signal(), config.shutdown_grace).await;
        Ok(Exit::Ok)
    })
}

/// Logging as configured, and the multi-threaded runtime a serving command runs on.
pub fn runtime(config: &ServeConfig) -> Result<tokio::runtime::Runtime, StartError> {
    init_logging(config.log_format, "info");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
}

/// The tasks beside the listeners: reloads, and the signals that clear the ownership cache
/// (SIGHUP) and reopen the decision log (SIGUSR1).
pub fn spawn_background(state: &Arc<State>, reload_interval: std::time::Duration) {
    server::spawn_reloader(Arc::clone(state), reload_interval);
    spawn_sighup_invalidation(Arc::clone(state));
    spawn_sigusr1_reopen(Arc::clone(state));
}

/// Loads everything the configuration names and binds the listeners. Any failure is a start-up
/// error that names what is wrong.
pub async fn start(config: &ServeConfig) -> Result<(Arc<State>, Listeners), StartError> {
    let metrics = Arc::new(Metrics::new());
    let policies = PolicyStore::open(policy_source(config)?, metrics.decisions.clone())?;
    metrics.set_policy(policies.current().identity());
    let opened = config
        .ownership
        .open(config.inventory_max_age, &metrics.outbound_tls_failures)?;
    server::reload::log_left_out(&opened.warnings);
    let ownership = Arc::new(CachedSource::new(
        opened.source,
        config.ownership_cache.clone(),
        metrics.ownership.clone(),
    ));
    let admin_token = config.admin_token_file.as_deref().map(admin_token).transpose()?;
    let auth = Authenticator::new(
        config.jwt_key.clone(),
        config.jwt_issuer.as_deref(),
        config.jwt_audience.as_deref(),
    )?;
    let timeouts = Timeouts {
        connect: config.connect_timeout,
        first_byte: config.first_byte_timeout,
        idle: config.idle_timeout,
    };
    let upstream_tls = match &config.upstream_tls {
        None => None,
        Some(files) => Some(Arc::new(ClientTls::load(
            "upstream",
            files.clone(),
            metrics.outbound_tls_failures.clone(),
        )?)),
    };
    let upstream = Upstream::new(&config.upstream, timeouts, upstream_tls.clone()).map_err(StartError::Upstream)?;
    let tls = config.tls.clone().map(ServerTls::load).transpose()?;
    let worst = server::limits::worst_case_bytes(
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
    let decision_log = match &config.decision_log {
        None => DecisionLog::tracing(metrics.decision_log.clone()),
        Some(path) => DecisionLog::open(
            Settings {
                path: path.clone(),
                max_bytes: config.decision_log_max_bytes,
                max_files: config.decision_log_max_files,
            },
            config.decision_log_required,
            metrics.decision_log.clone(),
        )
        .map_err(|e| StartError::DecisionLog(format!("{}: {e}", path.display())))?,
    };
    let state = Arc::new(State {
        auth,
        policies,
        inventory: opened.file,
        ownership,
        inventory_service: opened.service,
        inventory_tls: opened.service_tls,
        upstream_tls,
        upstream,
        metrics,
        max_line_bytes: config.max_line_bytes,
        max_connections: config.max_connections,
        header_timeout: config.header_timeout,
        streams: StreamBudget::new(config.stream_limits),
        separate_ops: config.ops_listen.is_some(),
        admin_token,
        tls,
        decision_log,
    });
    let callers = bind("listen", config.listen).await?;
    let ops = match config.ops_listen {
        None => None,
        Some(addr) => Some(bind("ops-listen", addr).await?),
    };
    Ok((state, Listeners { callers, ops }))
}

/// The policy directory, or the signed bundle with the keys that may sign it.
fn policy_source(config: &ServeConfig) -> Result<PolicySource, StartError> {
    Ok(match &config.policy_bundle {
        None => PolicySource::Dir {
            policies: config.policies.clone(),
            schema: config.schema.clone(),
        },
        Some(b) => PolicySource::Bundle {
            file: b.file.clone(),
            keys: Arc::new(crate::bundle::read_public_keys(&b.public_keys).map_err(LoadError::from)?),
            min_serial: b.min_revision,
        },
    })
}

fn admin_token(path: &std::path::Path) -> Result<Vec<u8>, StartError> {
    let token = std::fs::read(path).map_err(|e| StartError::AdminToken(format!("{}: {e}", path.display())))?;
    let token = token.trim_ascii().to_vec();
    if token.len() < 16 {
        return Err(StartError::AdminToken("the token must be at least 16 bytes".into()));
    }
    Ok(token)
}

async fn bind(setting: &'static str, addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { setting, addr, source })
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

/// SIGUSR1 reopens the decision log file, for external rotators (logrotate's `postrotate`).
/// SIGHUP already means "registrations changed", so it is not overloaded with this.
fn spawn_sigusr1_reopen(state: Arc<State>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            state.decision_log.reopen().await;
        }
    });
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
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
