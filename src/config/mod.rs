//! `satgate serve` configuration: flags, environment variables (`SATGATE_*`) and an optional TOML
//! file, in that order of precedence, resolved into one checked [`ServeConfig`].
//!
//! Each setting is declared once as a raw value, in [`ServeArgs`] (the same struct reads the
//! flags, the environment and the file), and its default once, in [`defaults`]. Resolution goes
//! setting by setting, and every problem is a [`ConfigError`] naming the setting.

pub mod defaults;

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::auth::JwtKey;
use crate::net::BaseUrl;
use crate::ownership::{CacheSettings, HttpSettings};
use crate::server::StreamLimits;
use crate::tls::client::ClientTlsFiles;
use crate::tls::TlsFiles;

/// A setting that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The kebab-case name (`idle-timeout`), as in the file and, with `--`, the flag.
    pub setting: &'static str,
    pub problem: String,
}

fn problem(setting: &'static str, problem: impl Display) -> ConfigError {
    ConfigError {
        setting,
        problem: problem.to_string(),
    }
}

/// `text [default: value]`, for the help of a setting whose default lives in [`defaults`].
fn help(text: &str, default: impl Display) -> String {
    format!("{text} [default: {default}]")
}

/// Raw settings, as given on the command line, in the environment (`SATGATE_*`) or in the TOML
/// file (kebab-case keys). Unset is `None`; [`ServeConfig::resolve`] fills in the defaults.
#[derive(clap::Args, Serialize, Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (kebab-case keys); flags and env win.
    #[arg(long, env = "SATGATE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[arg(long, env = "SATGATE_LISTEN", help = help("Address to listen on for callers", defaults::LISTEN))]
    pub listen: Option<String>,
    /// Address for /healthz, /readyz, /metrics and /admin; then --listen serves only /sat/*.
    #[arg(long, env = "SATGATE_OPS_LISTEN")]
    pub ops_listen: Option<String>,
    /// Base URL of the SSI audit endpoint, e.g. http://127.0.0.1:9090. Plain http:// only to the
    /// pod's loopback unless --upstream-allow-plaintext; https:// needs --upstream-ca-file.
    #[arg(long, env = "SATGATE_UPSTREAM")]
    pub upstream: Option<String>,
    /// PEM CA certificate(s) an https:// upstream's certificate must chain to (the only trust
    /// anchors; for the system's, name its bundle, e.g. /etc/ssl/certs/ca-certificates.crt).
    /// Reloaded when it changes.
    #[arg(long, env = "SATGATE_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// PEM client certificate chain satgate presents to an https:// upstream (mutual TLS; needs
    /// --upstream-client-key-file). Reloaded when it changes.
    #[arg(long, env = "SATGATE_UPSTREAM_CLIENT_CERT_FILE")]
    pub upstream_client_cert_file: Option<PathBuf>,
    /// PEM private key of --upstream-client-cert-file.
    #[arg(long, env = "SATGATE_UPSTREAM_CLIENT_KEY_FILE")]
    pub upstream_client_key_file: Option<PathBuf>,
    /// Accept a plain http:// upstream that is not on the loopback (readable and answerable by
    /// anyone on the network path).
    #[arg(long, env = "SATGATE_UPSTREAM_ALLOW_PLAINTEXT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub upstream_allow_plaintext: Option<bool>,
    /// Inventory JSON file (docs/contract.md §2), reloaded when it changes.
    #[arg(long, env = "SATGATE_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Inventory service base URL (`GET {url}/devices/{deviceId}`), instead of --inventory.
    /// https:// needs --inventory-ca-file; plain http:// only to the pod's loopback unless
    /// --inventory-allow-plaintext.
    #[arg(long, env = "SATGATE_INVENTORY_URL")]
    pub inventory_url: Option<String>,
    /// PEM CA certificate(s) the inventory service's certificate must chain to (the only trust
    /// anchors; for the system's, name its bundle, e.g. /etc/ssl/certs/ca-certificates.crt).
    /// Reloaded when it changes.
    #[arg(long, env = "SATGATE_INVENTORY_CA_FILE")]
    pub inventory_ca_file: Option<PathBuf>,
    /// PEM client certificate chain satgate presents to the inventory service (mutual TLS; needs
    /// --inventory-client-key-file). Reloaded when it changes.
    #[arg(long, env = "SATGATE_INVENTORY_CLIENT_CERT_FILE")]
    pub inventory_client_cert_file: Option<PathBuf>,
    /// PEM private key of --inventory-client-cert-file.
    #[arg(long, env = "SATGATE_INVENTORY_CLIENT_KEY_FILE")]
    pub inventory_client_key_file: Option<PathBuf>,
    /// Accept a plain http:// inventory service that is not on the loopback: whoever can answer
    /// on its address could then say that any Party owns any Device.
    #[arg(long, env = "SATGATE_INVENTORY_ALLOW_PLAINTEXT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub inventory_allow_plaintext: Option<bool>,
    #[arg(long, env = "SATGATE_INVENTORY_TIMEOUT",
          help = help("Inventory service timeout per call, connect included", defaults::show(defaults::INVENTORY_TIMEOUT)))]
    pub inventory_timeout: Option<String>,
    #[arg(long, env = "SATGATE_INVENTORY_MAX_IN_FLIGHT",
          help = help("Most inventory service calls in flight at once", defaults::INVENTORY_MAX_IN_FLIGHT))]
    pub inventory_max_in_flight: Option<usize>,
    #[arg(long, env = "SATGATE_OWNERSHIP_TTL",
          help = help("How long a Device's owners are cached", defaults::show(defaults::OWNERSHIP_TTL)))]
    pub ownership_ttl: Option<String>,
    #[arg(long, env = "SATGATE_OWNERSHIP_UNKNOWN_TTL",
          help = help("How long \"unknown Device\" is cached", defaults::show(defaults::OWNERSHIP_UNKNOWN_TTL)))]
    pub ownership_unknown_ttl: Option<String>,
    #[arg(long, env = "SATGATE_INVENTORY_MAX_AGE",
          help = help("How long a changed inventory file that keeps failing to load may leave the last good one in force; then owner views are withheld",
                      defaults::show(defaults::INVENTORY_MAX_AGE)))]
    pub inventory_max_age: Option<String>,
    #[arg(long, env = "SATGATE_OWNERSHIP_CACHE_CAPACITY",
          help = help("Most Devices in the ownership cache", defaults::OWNERSHIP_CACHE_CAPACITY))]
    pub ownership_cache_capacity: Option<u64>,
    /// File holding the bearer token for POST /admin/ownership/invalidate (disabled if unset).
    #[arg(long, env = "SATGATE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM certificate chain to serve TLS with (needs --tls-key-file); reloaded when it changes.
    #[arg(long, env = "SATGATE_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert-file.
    #[arg(long, env = "SATGATE_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    #[arg(long, env = "SATGATE_POLICIES",
          help = help("Directory of *.cedar policies, reloaded when they change", defaults::POLICIES))]
    pub policies: Option<PathBuf>,
    #[arg(long, env = "SATGATE_SCHEMA", help = help("Cedar schema", defaults::SCHEMA))]
    pub schema: Option<PathBuf>,
    /// Signed policy bundle (`satgate bundle build`), instead of --policies and --schema; used
    /// only when FILE.minisig verifies with a --policy-bundle-public-key. Reloaded when it changes.
    #[arg(long, env = "SATGATE_POLICY_BUNDLE")]
    pub policy_bundle: Option<PathBuf>,
    /// minisign public key allowed to sign policy bundles; repeat it (or separate with commas)
    /// for a key rotation.
    #[arg(long, env = "SATGATE_POLICY_BUNDLE_PUBLIC_KEY", value_delimiter = ',')]
    pub policy_bundle_public_key: Option<Vec<PathBuf>>,
    /// Lowest policy bundle serial accepted, at start-up and at reload: a floor against rollback
    /// that holds across restarts (a running satgate also refuses any bundle older than the one
    /// it serves). Raise it to the serial of a bundle that must never be gone back on. [default: 0]
    #[arg(long, env = "SATGATE_POLICY_BUNDLE_MIN_REVISION", value_name = "SERIAL")]
    pub policy_bundle_min_revision: Option<u64>,
    /// File holding the HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "SATGATE_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// PEM public key(s): RSA for RS256 or EC P-256 for ES256.
    #[arg(long, env = "SATGATE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// The identity provider's JWKS document (RFC 7517): RS256 and ES256 signing keys, each token
    /// verified by the key its `kid` names. Reloaded when it changes.
    #[arg(long, env = "SATGATE_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// ext-proc only: tokens are verified by Envoy's jwt_authn filter, whose verified payload
    /// arrives as dynamic metadata (never from a header); in place of a key file.
    #[arg(long, env = "SATGATE_JWT_FROM_ENVOY", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub jwt_from_envoy: Option<bool>,
    /// Required `iss` claim.
    #[arg(long, env = "SATGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "SATGATE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    #[arg(long, env = "SATGATE_MAX_CONNECTIONS",
          help = help("Most caller connections served at once", defaults::MAX_CONNECTIONS))]
    pub max_connections: Option<usize>,
    #[arg(long, env = "SATGATE_MAX_STREAMS",
          help = help("Most record streams in flight; more are refused with 503", defaults::STREAM_LIMITS.max_streams))]
    pub max_streams: Option<usize>,
    #[arg(long, env = "SATGATE_MAX_STREAMS_PER_USER",
          help = help("Most record streams in flight for one User; more are refused with 429",
                      defaults::STREAM_LIMITS.max_streams_per_user))]
    pub max_streams_per_user: Option<usize>,
    #[arg(long, env = "SATGATE_HEADER_TIMEOUT",
          help = help("Longest a client may take to send complete request headers or a TLS handshake",
                      defaults::show(defaults::HEADER_TIMEOUT)))]
    pub header_timeout: Option<String>,
    #[arg(long, env = "SATGATE_MAX_LINE_BYTES", help = help("Longest accepted record line in bytes", defaults::MAX_LINE_BYTES))]
    pub max_line_bytes: Option<usize>,
    #[arg(long, env = "SATGATE_CONNECT_TIMEOUT", help = help("Upstream connect timeout", defaults::show(defaults::CONNECT_TIMEOUT)))]
    pub connect_timeout: Option<String>,
    #[arg(long, env = "SATGATE_FIRST_BYTE_TIMEOUT",
          help = help("Time allowed for the upstream's response headers", defaults::show(defaults::FIRST_BYTE_TIMEOUT)))]
    pub first_byte_timeout: Option<String>,
    #[arg(long, env = "SATGATE_IDLE_TIMEOUT",
          help = help("Longest silence allowed from the upstream, or from a client not reading", defaults::show(defaults::IDLE_TIMEOUT)))]
    pub idle_timeout: Option<String>,
    #[arg(long, env = "SATGATE_RELOAD_INTERVAL",
          help = help("How often watched files are checked for changes", defaults::show(defaults::RELOAD_INTERVAL)))]
    pub reload_interval: Option<String>,
    #[arg(long, env = "SATGATE_SHUTDOWN_GRACE",
          help = help("How long requests in flight may run after SIGTERM/SIGINT", defaults::show(defaults::SHUTDOWN_GRACE)))]
    pub shutdown_grace: Option<String>,
    #[arg(long, env = "SATGATE_LOG_FORMAT", help = help("Log format: text or json", "text"))]
    pub log_format: Option<String>,
    /// File to append the decision log to (one JSON record per served request); without it the
    /// records go to the log, target satgate::decision.
    #[arg(long, env = "SATGATE_DECISION_LOG")]
    pub decision_log: Option<PathBuf>,
    /// With --decision-log: refuse requests with 503 before anything is disclosed while the log
    /// cannot be written (disk full, I/O error). [default: true]
    #[arg(long, env = "SATGATE_DECISION_LOG_REQUIRED", value_name = "BOOL")]
    pub decision_log_required: Option<bool>,
    #[arg(long, env = "SATGATE_DECISION_LOG_MAX_BYTES",
          help = help("With --decision-log: rotate the file before it grows past this many bytes (0: never; rotate it externally and send SIGUSR1)",
                      defaults::DECISION_LOG_MAX_BYTES))]
    pub decision_log_max_bytes: Option<u64>,
    #[arg(long, env = "SATGATE_DECISION_LOG_MAX_FILES",
          help = help("With --decision-log: rotated files kept (FILE.1 newest); older ones are deleted",
                      defaults::DECISION_LOG_MAX_FILES))]
    pub decision_log_max_files: Option<usize>,
}

impl ServeArgs {
    /// These settings over the config file's (when one is named): what is set here wins.
    fn over_file(&self) -> Result<ServeArgs, ConfigError> {
        let Some(path) = &self.config else {
            return Ok(self.clone());
        };
        let bad = |e: &dyn Display| problem("config", format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
        let mut merged: toml::Table = toml::from_str::<ServeArgs>(&text)
            .and_then(|file| toml::Table::try_from(file).map_err(serde::de::Error::custom))
            .map_err(|e| bad(&e))?;
        // Unset settings are not serialized, so only what is set here replaces the file's.
        merged.extend(toml::Table::try_from(self).map_err(|e| bad(&e))?);
        ServeArgs::deserialize(merged).map_err(|e| bad(&e))
    }
}

/// A signed policy bundle and the public keys allowed to sign it (at least one).
#[derive(Debug, Clone)]
pub struct PolicyBundle {
    pub file: PathBuf,
    pub public_keys: Vec<PathBuf>,
    /// The lowest serial accepted (`--policy-bundle-min-revision`; 0: any).
    pub min_revision: u64,
}

/// Where ownership comes from (opened by [`crate::ownership::SourceConfig::open`]).
pub use crate::ownership::SourceConfig as OwnershipSourceConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A complete, checked configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// The operations listener; `None`: operations endpoints are served on `listen`.
    pub ops_listen: Option<SocketAddr>,
    pub upstream: String,
    /// TLS to an `https://` upstream.
    pub upstream_tls: Option<ClientTlsFiles>,
    pub ownership: OwnershipSourceConfig,
    pub ownership_cache: CacheSettings,
    /// See [`defaults::INVENTORY_MAX_AGE`].
    pub inventory_max_age: Duration,
    pub admin_token_file: Option<PathBuf>,
    /// Serve TLS with these files; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    pub policies: PathBuf,
    pub schema: PathBuf,
    /// A signed bundle and the keys that may sign it, in place of `policies` and `schema`.
    pub policy_bundle: Option<PolicyBundle>,
    pub jwt_key: JwtKey,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub max_line_bytes: usize,
    pub max_connections: usize,
    pub stream_limits: StreamLimits,
    pub header_timeout: Duration,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub reload_interval: Duration,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub decision_log: Option<PathBuf>,
    /// With `decision_log`: refuse requests while it cannot be written.
    pub decision_log_required: bool,
    pub decision_log_max_bytes: u64,
    pub decision_log_max_files: usize,
}

impl ServeConfig {
    /// The defaults, around what has none: for the demo and tests, which set a few fields after.
    pub fn new(listen: SocketAddr, upstream: String, ownership: OwnershipSourceConfig, jwt_key: JwtKey) -> Self {
        Self {
            listen,
            ops_listen: None,
            upstream,
            upstream_tls: None,
            ownership,
            ownership_cache: CacheSettings::default(),
            inventory_max_age: defaults::INVENTORY_MAX_AGE,
            admin_token_file: None,
            tls: None,
            policies: defaults::POLICIES.into(),
            schema: defaults::SCHEMA.into(),
            policy_bundle: None,
            jwt_key,
            jwt_issuer: None,
            jwt_audience: None,
            max_line_bytes: defaults::MAX_LINE_BYTES,
            max_connections: defaults::MAX_CONNECTIONS,
            stream_limits: defaults::STREAM_LIMITS,
            header_timeout: defaults::HEADER_TIMEOUT,
            connect_timeout: defaults::CONNECT_TIMEOUT,
            first_byte_timeout: defaults::FIRST_BYTE_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            reload_interval: defaults::RELOAD_INTERVAL,
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            log_format: LogFormat::Text,
            decision_log: None,
            decision_log_required: true,
            decision_log_max_bytes: defaults::DECISION_LOG_MAX_BYTES,
            decision_log_max_files: defaults::DECISION_LOG_MAX_FILES,
        }
    }

    /// Resolves flags and env over the config file over the defaults, and checks everything.
    pub fn resolve(args: &ServeArgs) -> Result<Self, ConfigError> {
        let s = args.over_file()?;
        let listen = address("listen", s.listen.as_deref().unwrap_or(defaults::LISTEN))?;
        let ops_listen = s.ops_listen.as_deref().map(|a| address("ops-listen", a)).transpose()?;
        if ops_listen == Some(listen) {
            return Err(problem("ops-listen", "must differ from listen"));
        }
        let upstream = s
            .upstream
            .clone()
            .ok_or(problem("upstream", "required (--upstream URL)"))?;
        let upstream_tls = client_tls(
            Peer::UPSTREAM,
            &upstream,
            [
                &s.upstream_ca_file,
                &s.upstream_client_cert_file,
                &s.upstream_client_key_file,
            ],
            s.upstream_allow_plaintext,
        )?;
        let policy_bundle = policy_bundle(&s)?;
        // With a bundle, the directory settings are not used (and were refused if given).
        let (policies, schema) = match &policy_bundle {
            Some(_) => (defaults::POLICIES.into(), defaults::SCHEMA.into()),
            None => (
                policies_dir(s.policies.clone())?,
                file("schema", s.schema.clone().unwrap_or_else(|| defaults::SCHEMA.into()))?,
            ),
        };
        Self {
            listen,
            ops_listen,
            upstream,
            upstream_tls,
            ownership: ownership(&s)?,
            ownership_cache: ownership_cache(&s)?,
            inventory_max_age: duration("inventory-max-age", &s.inventory_max_age, defaults::INVENTORY_MAX_AGE)?,
            admin_token_file: s
                .admin_token_file
                .clone()
                .map(|f| file("admin-token-file", f))
                .transpose()?,
            tls: tls(&s)?,
            policies,
            schema,
            policy_bundle,
            jwt_key: jwt_key(&s)?,
            jwt_issuer: s.jwt_issuer.clone(),
            jwt_audience: s.jwt_audience.clone(),
            max_line_bytes: max_line_bytes(s.max_line_bytes)?,
            max_connections: at_least_one("max-connections", s.max_connections, defaults::MAX_CONNECTIONS)?,
            stream_limits: stream_limits(&s)?,
            header_timeout: duration("header-timeout", &s.header_timeout, defaults::HEADER_TIMEOUT)?,
            connect_timeout: duration("connect-timeout", &s.connect_timeout, defaults::CONNECT_TIMEOUT)?,
            first_byte_timeout: duration(
                "first-byte-timeout",
                &s.first_byte_timeout,
                defaults::FIRST_BYTE_TIMEOUT,
            )?,
            idle_timeout: duration("idle-timeout", &s.idle_timeout, defaults::IDLE_TIMEOUT)?,
            reload_interval: duration("reload-interval", &s.reload_interval, defaults::RELOAD_INTERVAL)?,
            shutdown_grace: duration("shutdown-grace", &s.shutdown_grace, defaults::SHUTDOWN_GRACE)?,
            log_format: log_format(s.log_format.as_deref())?,
            decision_log: s.decision_log.clone(),
            decision_log_required: s.decision_log_required.unwrap_or(true),
            decision_log_max_bytes: s.decision_log_max_bytes.unwrap_or(defaults::DECISION_LOG_MAX_BYTES),
            decision_log_max_files: at_least_one(
                "decision-log-max-files",
                s.decision_log_max_files,
                defaults::DECISION_LOG_MAX_FILES,
            )?,
        }
        .checked_decision_log(&s)
    }

    /// The decision log's settings mean nothing without the file: giving them alone is a mistake.
    fn checked_decision_log(self, s: &ServeArgs) -> Result<Self, ConfigError> {
        if self.decision_log.is_none() {
            for (setting, given) in [
                ("decision-log-required", s.decision_log_required.is_some()),
                ("decision-log-max-bytes", s.decision_log_max_bytes.is_some()),
                ("decision-log-max-files", s.decision_log_max_files.is_some()),
            ] {
                if given {
                    return Err(problem(setting, "given without --decision-log"));
                }
            }
        }
        Ok(self)
    }
}

fn address(setting: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| problem(setting, format!("{value:?} is not an ADDR:PORT")))
}

fn duration(setting: &'static str, value: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    value
        .as_deref()
        .map_or(Ok(default), parse_duration)
        .map_err(|e| problem(setting, e))
}

fn file(setting: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(problem(setting, format!("{} is not a readable file", path.display())))
    }
}

fn at_least_one(setting: &'static str, value: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(problem(setting, "must be at least 1")),
        n => Ok(n),
    }
}

fn ownership(s: &ServeArgs) -> Result<OwnershipSourceConfig, ConfigError> {
    match (&s.inventory, &s.inventory_url) {
        (Some(path), None) => Ok(OwnershipSourceConfig::File(file("inventory", path.clone())?)),
        (None, Some(url)) => {
            let timeout = duration("inventory-timeout", &s.inventory_timeout, defaults::INVENTORY_TIMEOUT)?;
            let settings = HttpSettings {
                connect_timeout: timeout,
                request_timeout: timeout,
                max_in_flight: at_least_one(
                    "inventory-max-in-flight",
                    s.inventory_max_in_flight,
                    defaults::INVENTORY_MAX_IN_FLIGHT,
                )?,
                tls: client_tls(
                    Peer::INVENTORY,
                    url,
                    [
                        &s.inventory_ca_file,
                        &s.inventory_client_cert_file,
                        &s.inventory_client_key_file,
                    ],
                    s.inventory_allow_plaintext,
                )?,
            };
            Ok(OwnershipSourceConfig::Http(url.clone(), settings))
        }
        (None, None) => Err(problem(
            "inventory",
            "one of --inventory FILE or --inventory-url URL is required",
        )),
        (Some(_), Some(_)) => Err(problem("inventory", "give only one of --inventory and --inventory-url")),
    }
}

/// The setting names of one outbound service's URL and TLS files.
struct Peer {
    url: &'static str,
    ca: &'static str,
    cert: &'static str,
    key: &'static str,
    allow_plaintext: &'static str,
}

impl Peer {
    const UPSTREAM: Self = Self {
        url: "upstream",
        ca: "upstream-ca-file",
        cert: "upstream-client-cert-file",
        key: "upstream-client-key-file",
        allow_plaintext: "upstream-allow-plaintext",
    };
    const INVENTORY: Self = Self {
        url: "inventory-url",
        ca: "inventory-ca-file",
        cert: "inventory-client-cert-file",
        key: "inventory-client-key-file",
        allow_plaintext: "inventory-allow-plaintext",
    };
}

/// Checks an outbound URL against its TLS settings: `https://` needs a CA file; plain `http://`
/// is accepted to the loopback, elsewhere only when explicitly allowed (on a network, anyone on
/// the path can read the calls and answer them); TLS files with `http://` would be silently
/// unused, so they are refused.
fn client_tls(
    peer: Peer,
    url: &str,
    [ca, cert, key]: [&Option<PathBuf>; 3],
    allow_plaintext: Option<bool>,
) -> Result<Option<ClientTlsFiles>, ConfigError> {
    let base = BaseUrl::parse(url).map_err(|e| problem(peer.url, e))?;
    let client = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((file(peer.cert, c.clone())?, file(peer.key, k.clone())?)),
        (Some(_), None) => return Err(problem(peer.key, format!("required with --{}", peer.cert))),
        (None, Some(_)) => return Err(problem(peer.cert, format!("required with --{}", peer.key))),
    };
    if !base.is_https() {
        if ca.is_some() || client.is_some() {
            return Err(problem(
                peer.url,
                "TLS files are given but the URL is http://, not https://",
            ));
        }
        if !base.is_loopback() && allow_plaintext != Some(true) {
            return Err(problem(
                peer.url,
                format!(
                    "plain http:// to a host other than the loopback can be read and answered by anyone on the network path: use https:// with --{}, or set --{} to accept that",
                    peer.ca, peer.allow_plaintext
                ),
            ));
        }
        return Ok(None);
    }
    let Some(ca) = ca else {
        return Err(problem(peer.ca, format!("required with an https:// {}", peer.url)));
    };
    Ok(Some(ClientTlsFiles {
        ca: file(peer.ca, ca.clone())?,
        client,
    }))
}

fn ownership_cache(s: &ServeArgs) -> Result<CacheSettings, ConfigError> {
    let cache = CacheSettings {
        capacity: s.ownership_cache_capacity.unwrap_or(defaults::OWNERSHIP_CACHE_CAPACITY),
        ttl: duration("ownership-ttl", &s.ownership_ttl, defaults::OWNERSHIP_TTL)?,
        unknown_ttl: duration(
            "ownership-unknown-ttl",
            &s.ownership_unknown_ttl,
            defaults::OWNERSHIP_UNKNOWN_TTL,
        )?,
    };
    if cache.unknown_ttl > cache.ttl {
        return Err(problem(
            "ownership-unknown-ttl",
            "must not be longer than ownership-ttl",
        ));
    }
    Ok(cache)
}

fn tls(s: &ServeArgs) -> Result<Option<TlsFiles>, ConfigError> {
    match (&s.tls_cert_file, &s.tls_key_file) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: file("tls-cert-file", cert.clone())?,
            key: file("tls-key-file", key.clone())?,
        })),
        (Some(_), None) => Err(problem("tls-key-file", "required with --tls-cert-file")),
        (None, Some(_)) => Err(problem("tls-cert-file", "required with --tls-key-file")),
    }
}

/// A bundle needs at least one public key: there is no unsigned mode, and no key is never
/// "accept anything".
fn policy_bundle(s: &ServeArgs) -> Result<Option<PolicyBundle>, ConfigError> {
    let keys = s.policy_bundle_public_key.clone().unwrap_or_default();
    match &s.policy_bundle {
        None if s.policy_bundle_min_revision.is_some() => {
            Err(problem("policy-bundle-min-revision", "given without --policy-bundle"))
        }
        None if keys.is_empty() => Ok(None),
        None => Err(problem("policy-bundle-public-key", "given without --policy-bundle")),
        Some(_) if s.policies.is_some() || s.schema.is_some() => Err(problem(
            "policy-bundle",
            "give either --policy-bundle or --policies/--schema, not both",
        )),
        Some(_) if keys.is_empty() => Err(problem(
            "policy-bundle-public-key",
            "required with --policy-bundle: a bundle is only used signed",
        )),
        Some(bundle) => Ok(Some(PolicyBundle {
            file: file("policy-bundle", bundle.clone())?,
            public_keys: keys
                .into_iter()
                .map(|k| file("policy-bundle-public-key", k))
                .collect::<Result<_, _>>()?,
            min_revision: s.policy_bundle_min_revision.unwrap_or(0),
        })),
    }
}

fn policies_dir(dir: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    let dir = dir.unwrap_or_else(|| defaults::POLICIES.into());
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(problem("policies", format!("{} is not a directory", dir.display())))
    }
}

fn jwt_key(s: &ServeArgs) -> Result<JwtKey, ConfigError> {
    let from_envoy = s.jwt_from_envoy.unwrap_or(false);
    match (
        &s.jwt_hs256_secret_file,
        &s.jwt_public_key_file,
        &s.jwt_jwks_file,
        from_envoy,
    ) {
        (Some(f), None, None, false) => Ok(JwtKey::Hs256SecretFile(file("jwt-hs256-secret-file", f.clone())?)),
        (None, Some(f), None, false) => Ok(JwtKey::PublicKeyFile(file("jwt-public-key-file", f.clone())?)),
        (None, None, Some(f), false) => Ok(JwtKey::JwksFile(file("jwt-jwks-file", f.clone())?)),
        (None, None, None, true) => Ok(JwtKey::EnvoyJwtAuthn),
        (None, None, None, false) => Err(problem(
            "jwt",
            "one of --jwt-hs256-secret-file, --jwt-public-key-file or --jwt-jwks-file is required",
        )),
        _ => Err(problem(
            "jwt",
            "give only one of --jwt-hs256-secret-file, --jwt-public-key-file, --jwt-jwks-file and --jwt-from-envoy",
        )),
    }
}

fn max_line_bytes(value: Option<usize>) -> Result<usize, ConfigError> {
    const RANGE: std::ops::RangeInclusive<usize> = 1024..=(64 << 20);
    let n = value.unwrap_or(defaults::MAX_LINE_BYTES);
    if RANGE.contains(&n) {
        Ok(n)
    } else {
        Err(problem(
            "max-line-bytes",
            format!("{n} is outside {}..={}", RANGE.start(), RANGE.end()),
        ))
    }
}

fn stream_limits(s: &ServeArgs) -> Result<StreamLimits, ConfigError> {
    let max_streams = at_least_one("max-streams", s.max_streams, defaults::STREAM_LIMITS.max_streams)?;
    let per_user = s
        .max_streams_per_user
        .unwrap_or(defaults::STREAM_LIMITS.max_streams_per_user);
    if !(1..=max_streams).contains(&per_user) {
        return Err(problem("max-streams-per-user", "must be between 1 and max-streams"));
    }
    Ok(StreamLimits {
        max_streams,
        max_streams_per_user: per_user,
    })
}

fn log_format(value: Option<&str>) -> Result<LogFormat, ConfigError> {
    match value {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(problem("log-format", format!("{other:?} is not text or json"))),
    }
}

/// `250ms`, `2s`, `1m`: a positive whole number with a unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 2s or 1m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(|| format!("{s:?} is too long"))?),
        _ => return Err(format!("{s:?} is not a duration like 500ms, 2s or 1m")),
    };
    if d.is_zero() {
        return Err(format!("{s:?} must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> (tempfile::TempDir, ServeArgs) {
        let dir = tempfile::tempdir().unwrap();
        let inv = dir.path().join("inv.json");
        std::fs::write(&inv, r#"{"meterPoints":[],"devices":[]}"#).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
        let args = ServeArgs {
            upstream: Some("http://127.0.0.1:9".into()),
            inventory: Some(inv),
            jwt_hs256_secret_file: Some(secret),
            ..ServeArgs::default()
        };
        (dir, args)
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let (_d, args) = files();
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.max_line_bytes, 1 << 20);
    }

    #[test]
    fn flags_win_over_the_file() {
        let (d, mut args) = files();
        let cfg = d.path().join("satgate.toml");
        std::fs::write(&cfg, "listen = \"127.0.0.1:7000\"\nidle-timeout = \"5s\"\n").unwrap();
        args.config = Some(cfg);
        args.listen = Some("127.0.0.1:7001".into());
        let c = ServeConfig::resolve(&args).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
    }

    #[test]
    fn the_example_config_file_uses_only_known_keys_and_valid_values() {
        let text = include_str!("../../deploy/kubernetes/satgate.toml");
        let file: ServeArgs = toml::from_str(text).unwrap();
        for d in [
            &file.inventory_timeout,
            &file.ownership_ttl,
            &file.ownership_unknown_ttl,
            &file.connect_timeout,
            &file.first_byte_timeout,
            &file.idle_timeout,
            &file.reload_interval,
            &file.shutdown_grace,
            &file.header_timeout,
            &file.inventory_max_age,
        ] {
            let d = d.as_deref().expect("every duration is shown");
            assert!(parse_duration(d).is_ok(), "{d}");
        }
        assert!(file.listen.unwrap().parse::<SocketAddr>().is_ok());
        assert!(file.ops_listen.unwrap().parse::<SocketAddr>().is_ok());
        assert!(file.max_streams.is_some() && file.max_streams_per_user.is_some());
        // The signed-bundle variant names the bundle and its keys instead of a directory.
        let bundled: ServeArgs = toml::from_str(include_str!("../../deploy/kubernetes-bundle/satgate.toml")).unwrap();
        assert!(bundled.policies.is_none() && bundled.schema.is_none());
        assert!(bundled.policy_bundle.is_some());
        assert_eq!(bundled.policy_bundle_public_key.map(|k| k.len()), Some(2));
        assert!(file.tls_cert_file.is_some() && file.tls_key_file.is_some());
    }

    #[test]
    fn bad_settings_are_named() {
        let (d, args) = files();
        let cases: Vec<(ServeArgs, &str)> = vec![
            (
                ServeArgs {
                    listen: Some("nowhere".into()),
                    ..args.clone()
                },
                "listen:",
            ),
            (
                ServeArgs {
                    upstream: Some("ftp://x".into()),
                    ..args.clone()
                },
                "upstream:",
            ),
            (
                ServeArgs {
                    upstream: None,
                    ..args.clone()
                },
                "upstream: required",
            ),
            (
                ServeArgs {
                    inventory: Some("/no/such".into()),
                    ..args.clone()
                },
                "inventory:",
            ),
            (
                ServeArgs {
                    jwt_hs256_secret_file: None,
                    ..args.clone()
                },
                "jwt:",
            ),
            (
                ServeArgs {
                    tls_cert_file: Some("tests/data/tls/a.crt".into()),
                    ..args.clone()
                },
                "tls-key-file: required",
            ),
            (
                ServeArgs {
                    tls_key_file: Some("tests/data/tls/a.key".into()),
                    ..args.clone()
                },
                "tls-cert-file: required",
            ),
            (
                ServeArgs {
                    tls_cert_file: Some("/no/such.crt".into()),
                    tls_key_file: Some("tests/data/tls/a.key".into()),
                    ..args.clone()
                },
                "tls-cert-file:",
            ),
            (
                ServeArgs {
                    jwt_public_key_file: Some(d.path().join("inv.json")),
                    ..args.clone()
                },
                "only one",
            ),
            (
                ServeArgs {
                    idle_timeout: Some("soon".into()),
                    ..args.clone()
                },
                "idle-timeout:",
            ),
            (
                ServeArgs {
                    max_line_bytes: Some(10),
                    ..args.clone()
                },
                "max-line-bytes:",
            ),
            (
                ServeArgs {
                    log_format: Some("xml".into()),
                    ..args.clone()
                },
                "log-format:",
            ),
            (
                ServeArgs {
                    ops_listen: Some("127.0.0.1:8080".into()),
                    ..args.clone()
                },
                "ops-listen: must differ",
            ),
            (
                ServeArgs {
                    max_streams: Some(0),
                    ..args.clone()
                },
                "max-streams:",
            ),
            (
                ServeArgs {
                    max_streams: Some(2),
                    max_streams_per_user: Some(3),
                    ..args.clone()
                },
                "max-streams-per-user:",
            ),
            (
                ServeArgs {
                    header_timeout: Some("0s".into()),
                    ..args.clone()
                },
                "header-timeout:",
            ),
            (
                ServeArgs {
                    decision_log_max_bytes: Some(1 << 20),
                    ..args.clone()
                },
                "decision-log-max-bytes: given without --decision-log",
            ),
            (
                ServeArgs {
                    decision_log: Some(d.path().join("decisions.log")),
                    decision_log_max_files: Some(0),
                    ..args.clone()
                },
                "decision-log-max-files:",
            ),
        ];
        for (a, want) in cases {
            let e = ServeConfig::resolve(&a).unwrap_err().to_string();
            assert!(e.contains(want), "{e} does not name {want}");
        }
        let cfg = d.path().join("bad.toml");
        std::fs::write(&cfg, "lisen = \"x\"\n").unwrap();
        let e = ServeConfig::resolve(&ServeArgs {
            config: Some(cfg),
            ..args
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn the_bundle_floor_comes_from_flag_env_or_file_and_needs_a_bundle() {
        let (d, args) = files();
        let bundle = d.path().join("policy.bundle");
        let key = d.path().join("k.pub");
        std::fs::write(&bundle, b"").unwrap();
        std::fs::write(&key, b"").unwrap();
        let with_bundle = ServeArgs {
            policy_bundle: Some(bundle),
            policy_bundle_public_key: Some(vec![key]),
            ..args.clone()
        };
        let floor = |a: &ServeArgs| ServeConfig::resolve(a).unwrap().policy_bundle.unwrap().min_revision;
        assert_eq!(floor(&with_bundle), 0, "no floor unless set");
        let cfg = d.path().join("satgate.toml");
        std::fs::write(&cfg, "policy-bundle-min-revision = 1767225600\n").unwrap();
        let from_file = ServeArgs {
            config: Some(cfg),
            ..with_bundle.clone()
        };
        assert_eq!(floor(&from_file), 1_767_225_600);
        let flag_wins = ServeArgs {
            policy_bundle_min_revision: Some(1_767_225_601),
            ..from_file
        };
        assert_eq!(floor(&flag_wins), 1_767_225_601);
        let e = ServeConfig::resolve(&ServeArgs {
            policy_bundle_min_revision: Some(5),
            ..args
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("policy-bundle-min-revision: given without --policy-bundle"),
            "{e}"
        );
        use clap::Parser;
        let cli = crate::cmd::Cli::try_parse_from(["satgate", "serve", "--policy-bundle-min-revision", "-1"]);
        assert!(cli.is_err(), "a serial is a whole number");
    }

    #[test]
    fn the_help_shows_the_defaults_from_the_defaults_block() {
        use clap::CommandFactory;
        let help = crate::cmd::Cli::command()
            .find_subcommand_mut("serve")
            .unwrap()
            .render_help()
            .to_string();
        for shown in [
            format!("[default: {}]", defaults::LISTEN),
            format!("[default: {}]", defaults::show(defaults::HEADER_TIMEOUT)),
            format!("[default: {}]", defaults::STREAM_LIMITS.max_streams),
            format!("[default: {}]", defaults::MAX_LINE_BYTES),
        ] {
            assert!(help.contains(&shown), "{shown} not in:\n{help}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        for bad in ["", "2", "s", "0s", "-1s", "1h", "400000000000000000m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
