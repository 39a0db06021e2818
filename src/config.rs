//! `satgate serve` configuration: flags, environment variables and an optional TOML file, in
//! that order of precedence, resolved into one validated [`ServeConfig`]. Every problem names the
//! setting it is about.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ownership::{CacheSettings, HttpSettings, HttpSource};
use crate::server::StreamLimits;
use crate::tls::TlsFiles;

/// Raw settings as given on the command line or in the environment (`SATGATE_*`).
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (kebab-case keys); flags and env win.
    #[arg(long, env = "SATGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on for callers [default: 127.0.0.1:8080].
    #[arg(long, env = "SATGATE_LISTEN")]
    pub listen: Option<String>,
    /// Address for /healthz, /readyz, /metrics and /admin; then --listen serves only /sat/*.
    #[arg(long, env = "SATGATE_OPS_LISTEN")]
    pub ops_listen: Option<String>,
    /// Base URL of the SSI audit endpoint, e.g. http://127.0.0.1:9090.
    #[arg(long, env = "SATGATE_UPSTREAM")]
    pub upstream: Option<String>,
    /// Inventory JSON file (CONTRACT section 2), reloaded when it changes.
    #[arg(long, env = "SATGATE_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Inventory service base URL (`GET {url}/devices/{deviceId}`), instead of --inventory.
    #[arg(long, env = "SATGATE_INVENTORY_URL")]
    pub inventory_url: Option<String>,
    /// Inventory service timeout per call, connect included [default: 2s].
    #[arg(long, env = "SATGATE_INVENTORY_TIMEOUT")]
    pub inventory_timeout: Option<String>,
    /// Most inventory service calls in flight at once [default: 32].
    #[arg(long, env = "SATGATE_INVENTORY_MAX_IN_FLIGHT")]
    pub inventory_max_in_flight: Option<usize>,
    /// How long a Device's owners are cached [default: 30s].
    #[arg(long, env = "SATGATE_OWNERSHIP_TTL")]
    pub ownership_ttl: Option<String>,
    /// How long "unknown Device" is cached [default: 5s].
    #[arg(long, env = "SATGATE_OWNERSHIP_UNKNOWN_TTL")]
    pub ownership_unknown_ttl: Option<String>,
    /// Most Devices in the ownership cache [default: 100000].
    #[arg(long, env = "SATGATE_OWNERSHIP_CACHE_CAPACITY")]
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
    /// Directory of `*.cedar` policies, reloaded when they change [default: policies].
    #[arg(long, env = "SATGATE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Cedar schema [default: schemas/sat.cedarschema].
    #[arg(long, env = "SATGATE_SCHEMA")]
    pub schema: Option<PathBuf>,
    /// File holding the HS256 shared secret (at least 32 bytes).
    #[arg(long, env = "SATGATE_JWT_HS256_SECRET_FILE")]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// PEM public key: RSA for RS256 or EC P-256 for ES256.
    #[arg(long, env = "SATGATE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "SATGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "SATGATE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Most client connections served at once [default: 1024].
    #[arg(long, env = "SATGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most record streams in flight; more are refused with 503 [default: 32].
    #[arg(long, env = "SATGATE_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Most record streams in flight for one User; more are refused with 429 [default: 4].
    #[arg(long, env = "SATGATE_MAX_STREAMS_PER_USER")]
    pub max_streams_per_user: Option<usize>,
    /// Longest a client may take to send complete request headers or a TLS handshake [default: 5s].
    #[arg(long, env = "SATGATE_HEADER_TIMEOUT")]
    pub header_timeout: Option<String>,
    /// Longest accepted record line in bytes [default: 1048576].
    #[arg(long, env = "SATGATE_MAX_LINE_BYTES")]
    pub max_line_bytes: Option<usize>,
    /// Upstream connect timeout, e.g. 2s [default: 2s].
    #[arg(long, env = "SATGATE_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// Time allowed for the upstream's response headers [default: 10s].
    #[arg(long, env = "SATGATE_FIRST_BYTE_TIMEOUT")]
    pub first_byte_timeout: Option<String>,
    /// Longest silence allowed between upstream body chunks [default: 30s].
    #[arg(long, env = "SATGATE_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// How often policy and inventory files are checked for changes [default: 2s].
    #[arg(long, env = "SATGATE_RELOAD_INTERVAL")]
    pub reload_interval: Option<String>,
    /// How long requests in flight may run after SIGTERM/SIGINT [default: 30s].
    #[arg(long, env = "SATGATE_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "SATGATE_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The same settings in a TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    ops_listen: Option<String>,
    upstream: Option<String>,
    inventory: Option<PathBuf>,
    inventory_url: Option<String>,
    inventory_timeout: Option<String>,
    inventory_max_in_flight: Option<usize>,
    ownership_ttl: Option<String>,
    ownership_unknown_ttl: Option<String>,
    ownership_cache_capacity: Option<u64>,
    admin_token_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    policies: Option<PathBuf>,
    schema: Option<PathBuf>,
    jwt_hs256_secret_file: Option<PathBuf>,
    jwt_public_key_file: Option<PathBuf>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    max_line_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_streams: Option<usize>,
    max_streams_per_user: Option<usize>,
    header_timeout: Option<String>,
    connect_timeout: Option<String>,
    first_byte_timeout: Option<String>,
    idle_timeout: Option<String>,
    reload_interval: Option<String>,
    shutdown_grace: Option<String>,
    log_format: Option<String>,
}

pub use crate::auth::JwtKey;

/// Where ownership comes from.
#[derive(Debug, Clone)]
pub enum OwnershipSourceConfig {
    File(PathBuf),
    Http(String, HttpSettings),
}

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
    pub ownership: OwnershipSourceConfig,
    pub ownership_cache: CacheSettings,
    pub admin_token_file: Option<PathBuf>,
    /// Serve TLS with these files; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    pub policies: PathBuf,
    pub schema: PathBuf,
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
}

impl ServeConfig {
    /// Resolves flags/env over the config file over defaults, and checks everything.
    pub fn resolve(args: &ServeArgs) -> Result<Self, String> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("config: {}: {e}", path.display()))?;
                toml::from_str::<FileSettings>(&text).map_err(|e| format!("config: {}: {e}", path.display()))?
            }
            None => FileSettings::default(),
        };
        macro_rules! pick {
            ($field:ident) => {
                args.$field.clone().or(file.$field)
            };
        }
        let listen = pick!(listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen
            .parse()
            .map_err(|_| format!("listen: {listen:?} is not an ADDR:PORT"))?;
        let ops_listen = match pick!(ops_listen) {
            None => None,
            Some(a) => Some(
                a.parse::<SocketAddr>()
                    .map_err(|_| format!("ops-listen: {a:?} is not an ADDR:PORT"))?,
            ),
        };
        if ops_listen == Some(listen) {
            return Err("ops-listen: must differ from listen".into());
        }
        let upstream = pick!(upstream).ok_or("upstream: required (--upstream URL)")?;
        crate::upstream::Upstream::new(&upstream, default_timeouts()).map_err(|e| format!("upstream: {e}"))?;
        let duration = |name: &str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(s) => parse_duration(&s).map_err(|e| format!("{name}: {e}")),
        };
        let ownership = match (pick!(inventory), pick!(inventory_url)) {
            (Some(file), None) => {
                require_file("inventory", &file)?;
                OwnershipSourceConfig::File(file)
            }
            (None, Some(url)) => {
                let timeout = duration("inventory-timeout", pick!(inventory_timeout), Duration::from_secs(2))?;
                let settings = HttpSettings {
                    connect_timeout: timeout,
                    request_timeout: timeout,
                    max_in_flight: pick!(inventory_max_in_flight).unwrap_or(32),
                };
                HttpSource::new(&url, settings.clone()).map_err(|e| format!("inventory-url: {e}"))?;
                OwnershipSourceConfig::Http(url, settings)
            }
            (None, None) => return Err("inventory: one of --inventory FILE or --inventory-url URL is required".into()),
            (Some(_), Some(_)) => return Err("inventory: give only one of --inventory and --inventory-url".into()),
        };
        let ownership_cache = CacheSettings {
            capacity: pick!(ownership_cache_capacity).unwrap_or(100_000),
            ttl: duration("ownership-ttl", pick!(ownership_ttl), Duration::from_secs(30))?,
            unknown_ttl: duration(
                "ownership-unknown-ttl",
                pick!(ownership_unknown_ttl),
                Duration::from_secs(5),
            )?,
        };
        if ownership_cache.unknown_ttl > ownership_cache.ttl {
            return Err("ownership-unknown-ttl: must not be longer than ownership-ttl".into());
        }
        let admin_token_file = pick!(admin_token_file);
        if let Some(f) = &admin_token_file {
            require_file("admin-token-file", f)?;
        }
        let tls = match (pick!(tls_cert_file), pick!(tls_key_file)) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                require_file("tls-cert-file", &cert)?;
                require_file("tls-key-file", &key)?;
                Some(TlsFiles { cert, key })
            }
            (Some(_), None) => return Err("tls-key-file: required with --tls-cert-file".into()),
            (None, Some(_)) => return Err("tls-cert-file: required with --tls-key-file".into()),
        };
        let policies = pick!(policies).unwrap_or_else(|| "policies".into());
        if !policies.is_dir() {
            return Err(format!("policies: {} is not a directory", policies.display()));
        }
        let schema = pick!(schema).unwrap_or_else(|| "schemas/sat.cedarschema".into());
        require_file("schema", &schema)?;
        let jwt_key = match (pick!(jwt_hs256_secret_file), pick!(jwt_public_key_file)) {
            (Some(f), None) => {
                require_file("jwt-hs256-secret-file", &f)?;
                JwtKey::Hs256SecretFile(f)
            }
            (None, Some(f)) => {
                require_file("jwt-public-key-file", &f)?;
                JwtKey::PublicKeyFile(f)
            }
            (None, None) => {
                return Err("jwt: one of --jwt-hs256-secret-file or --jwt-public-key-file is required".into())
            }
            (Some(_), Some(_)) => {
                return Err("jwt: give only one of --jwt-hs256-secret-file and --jwt-public-key-file".into())
            }
        };
        let max_line_bytes = pick!(max_line_bytes).unwrap_or(1 << 20);
        if !(1024..=(64 << 20)).contains(&max_line_bytes) {
            return Err(format!("max-line-bytes: {max_line_bytes} is outside 1024..=67108864"));
        }
        let max_connections = pick!(max_connections).unwrap_or(1024);
        if max_connections == 0 {
            return Err("max-connections: must be at least 1".into());
        }
        let defaults = StreamLimits::DEFAULT;
        let stream_limits = StreamLimits {
            max_streams: pick!(max_streams).unwrap_or(defaults.max_streams),
            max_streams_per_user: pick!(max_streams_per_user).unwrap_or(defaults.max_streams_per_user),
        };
        if stream_limits.max_streams == 0 {
            return Err("max-streams: must be at least 1".into());
        }
        if !(1..=stream_limits.max_streams).contains(&stream_limits.max_streams_per_user) {
            return Err("max-streams-per-user: must be between 1 and max-streams".into());
        }
        let log_format = match pick!(log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(format!("log-format: {other:?} is not text or json")),
        };
        Ok(Self {
            listen,
            ops_listen,
            upstream,
            ownership,
            ownership_cache,
            admin_token_file,
            tls,
            policies,
            schema,
            jwt_key,
            jwt_issuer: pick!(jwt_issuer),
            jwt_audience: pick!(jwt_audience),
            max_line_bytes,
            max_connections,
            stream_limits,
            header_timeout: duration("header-timeout", pick!(header_timeout), DEFAULT_HEADER_TIMEOUT)?,
            connect_timeout: duration("connect-timeout", pick!(connect_timeout), Duration::from_secs(2))?,
            first_byte_timeout: duration("first-byte-timeout", pick!(first_byte_timeout), Duration::from_secs(10))?,
            idle_timeout: duration("idle-timeout", pick!(idle_timeout), Duration::from_secs(30))?,
            reload_interval: duration("reload-interval", pick!(reload_interval), Duration::from_secs(2))?,
            shutdown_grace: duration("shutdown-grace", pick!(shutdown_grace), Duration::from_secs(30))?,
            log_format,
        })
    }
}

/// Long enough for any real client on a slow link, short enough that sockets opened and left
/// silent (or trickling a byte at a time) give their connection slot back quickly.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

fn default_timeouts() -> crate::upstream::Timeouts {
    crate::upstream::Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(10),
        idle: Duration::from_secs(30),
    }
}

fn require_file(name: &str, path: &Path) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!("{name}: {} is not a readable file", path.display()))
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
        let text = include_str!("../deploy/satgate.toml");
        let file: FileSettings = toml::from_str(text).unwrap();
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
        ] {
            let d = d.as_deref().expect("every duration is shown");
            assert!(parse_duration(d).is_ok(), "{d}");
        }
        assert!(file.listen.unwrap().parse::<SocketAddr>().is_ok());
        assert!(file.ops_listen.unwrap().parse::<SocketAddr>().is_ok());
        assert!(file.max_streams.is_some() && file.max_streams_per_user.is_some());
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
        ];
        for (a, want) in cases {
            let e = ServeConfig::resolve(&a).unwrap_err();
            assert!(e.contains(want), "{e} does not name {want}");
        }
        let cfg = d.path().join("bad.toml");
        std::fs::write(&cfg, "lisen = \"x\"\n").unwrap();
        let e = ServeConfig::resolve(&ServeArgs {
            config: Some(cfg),
            ..args
        })
        .unwrap_err();
        assert!(e.contains("lisen"), "{e}");
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
