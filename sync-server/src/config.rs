//! `serve`'s settings: each one from the command line, the environment or a TOML file, in that
//! order of precedence, then its default. docs/CONFIGURATION.md lists them all; its example file
//! is parsed by a test here so the two cannot drift apart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::serve::ServeLimits;

/// One setting as it may arrive from any source (`None`: not given there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// Where phones and the console connect [default: 127.0.0.1:8080]. Plain HTTP is refused off
    /// loopback: run `admin init-tls` first.
    #[arg(long, env = "GRIDWORK_LISTEN")]
    pub listen: Option<String>,
    /// The store (set on the command line with the global `--store`, or `GRIDWORK_STORE`).
    #[arg(skip)]
    pub store: Option<String>,
    /// `auto` [default]: TLS from DATA_DIR/tls once `admin init-tls` has made it; `off`: plain
    /// HTTP (loopback only); or a directory holding the same files.
    #[arg(long, env = "GRIDWORK_TLS")]
    pub tls: Option<String>,
    /// Where /metrics listens, apart from the phones [default: 127.0.0.1:9464]; `off` for none.
    #[arg(long, env = "GRIDWORK_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// When set, /metrics answers only `Authorization: Bearer TOKEN` (for a listener off loopback).
    #[arg(long, env = "GRIDWORK_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Log filter, in tracing's syntax [default: info].
    #[arg(long, env = "GRIDWORK_LOG")]
    pub log: Option<String>,
    /// `text` [default] or `json` (one object per line, for collectors).
    #[arg(long, env = "GRIDWORK_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Open connections at most; past it new ones wait in the kernel's queue [default: 4096].
    #[arg(long, env = "GRIDWORK_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's headers, in milliseconds [default: 15000].
    #[arg(long, env = "GRIDWORK_HEADER_READ_TIMEOUT_MS")]
    pub header_read_timeout_ms: Option<u64>,
    /// How long a request's body may take to arrive, in milliseconds [default: 120000].
    #[arg(long, env = "GRIDWORK_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<u64>,
}

/// Where the server keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded SQLite store in this data directory.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by its connection URL.
    Postgres(String),
}

/// How TLS is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsChoice {
    /// The data directory's `tls/` when it exists, plain HTTP otherwise.
    Auto,
    Off,
    Dir(PathBuf),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting decided.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub store: StoreLocation,
    pub tls: TlsChoice,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_token: Option<String>,
    pub log: String,
    pub log_format: LogFormat,
    pub limits: ServeLimits,
}

/// A setting that cannot be used, naming where it came from when the file gave it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{setting} = {value:?}: {expected}")]
    Invalid { setting: &'static str, value: String, expected: &'static str },
}

impl ServeSettings {
    /// Reads a TOML settings file (unknown keys are errors: a misspelt setting must not be
    /// silently ignored).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// `self` (command line and environment, as clap merged them) over `file`, then defaults.
    pub fn resolve(self, file: ServeSettings, data_dir: Option<&Path>) -> Result<Resolved, ConfigError> {
        let pick = |a: Option<String>, b: Option<String>| a.or(b);
        let listen_text = pick(self.listen, file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_text.parse().map_err(|_| ConfigError::Invalid {
            setting: "listen",
            value: listen_text.clone(),
            expected: "an address like 127.0.0.1:8080 or [::]:8443",
        })?;
        let store = match pick(self.store, file.store).as_deref() {
            None | Some("sqlite") => {
                StoreLocation::Sqlite(data_dir.map(Path::to_owned).ok_or(ConfigError::Invalid {
                    setting: "data_dir",
                    value: String::new(),
                    expected: "the embedded store needs --data-dir DIR (or GRIDWORK_DATA_DIR)",
                })?)
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreLocation::Postgres(url.to_owned())
            }
            Some(other) => {
                return Err(ConfigError::Invalid {
                    setting: "store",
                    value: other.to_owned(),
                    expected: "`sqlite` (the data directory) or a postgres:// URL",
                })
            }
        };
        let tls = match pick(self.tls, file.tls).as_deref() {
            None | Some("auto") => TlsChoice::Auto,
            Some("off") => TlsChoice::Off,
            Some(dir) => TlsChoice::Dir(PathBuf::from(dir)),
        };
        let metrics_listen = match pick(self.metrics_listen, file.metrics_listen).as_deref() {
            Some("off") => None,
            Some(m) => Some(m.parse().map_err(|_| ConfigError::Invalid {
                setting: "metrics_listen",
                value: m.to_owned(),
                expected: "an address like 127.0.0.1:9464, or `off`",
            })?),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        };
        let metrics_token = pick(self.metrics_token, file.metrics_token);
        if metrics_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Invalid {
                setting: "metrics_token",
                value: "(hidden)".into(),
                expected: "at least 16 characters",
            });
        }
        let log_format = match pick(self.log_format, file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    setting: "log_format",
                    value: other.to_owned(),
                    expected: "`text` or `json`",
                })
            }
        };
        let defaults = ServeLimits::default();
        let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
        let limits = ServeLimits {
            max_connections: self.max_connections.or(file.max_connections).unwrap_or(defaults.max_connections),
            header_read_timeout: ms(
                self.header_read_timeout_ms.or(file.header_read_timeout_ms),
                defaults.header_read_timeout,
            ),
            body_timeout: ms(self.body_timeout_ms.or(file.body_timeout_ms), defaults.body_timeout),
        };
        if limits.max_connections == 0 {
            return Err(ConfigError::Invalid { setting: "max_connections", value: "0".into(), expected: "at least 1" });
        }
        Ok(Resolved {
            listen,
            store,
            tls,
            metrics_listen,
            metrics_token,
            log: pick(self.log, file.log).unwrap_or_else(|| "info".into()),
            log_format,
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in docs/CONFIGURATION.md is a file the server accepts, with every setting.
    #[test]
    fn the_documented_example_file_parses_and_sets_every_setting() {
        let doc = include_str!("../../docs/CONFIGURATION.md");
        let start = doc.find("```toml\n").expect("an example") + "```toml\n".len();
        let example = &doc[start..start + doc[start..].find("```").expect("its end")];
        let file = ServeSettings::from_toml(example).expect("the example parses");
        let all_set = file.listen.is_some()
            && file.store.is_some()
            && file.tls.is_some()
            && file.metrics_listen.is_some()
            && file.metrics_token.is_some()
            && file.log.is_some()
            && file.log_format.is_some()
            && file.max_connections.is_some()
            && file.header_read_timeout_ms.is_some()
            && file.body_timeout_ms.is_some();
        assert!(all_set, "the example leaves a setting out: {file:?}");
        file.resolve(ServeSettings::default(), Some(Path::new("/tmp"))).expect("the example resolves");
    }

    #[test]
    fn the_command_line_wins_over_the_file_and_the_file_over_defaults() {
        let file = ServeSettings::from_toml("listen = \"127.0.0.1:9000\"\nmax_connections = 10\nlog_format = \"json\"")
            .expect("parses");
        let cli = ServeSettings { listen: Some("127.0.0.1:9001".into()), ..Default::default() };
        let r = cli.resolve(file, Some(Path::new("/d"))).expect("resolves");
        assert_eq!(r.listen, "127.0.0.1:9001".parse().expect("addr"));
        assert_eq!(r.limits.max_connections, 10);
        assert_eq!(r.log_format, LogFormat::Json);
        assert_eq!(r.store, StoreLocation::Sqlite(PathBuf::from("/d")));
        assert_eq!(r.metrics_listen, Some("127.0.0.1:9464".parse().expect("addr")));
    }

    #[test]
    fn a_misspelt_or_bad_setting_is_an_error_naming_it() {
        let e = ServeSettings::from_toml("listne = \"127.0.0.1:1\"").expect_err("unknown key");
        assert!(e.contains("listne"), "{e}");
        let bad = ServeSettings { log_format: Some("yaml".into()), ..Default::default() };
        let e = bad.resolve(ServeSettings::default(), Some(Path::new("/d"))).expect_err("bad format");
        assert!(e.to_string().contains("log_format"), "{e}");
        let e = ServeSettings::default().resolve(ServeSettings::default(), None).expect_err("no data dir");
        assert!(e.to_string().contains("--data-dir"), "{e}");
        let short = ServeSettings { metrics_token: Some("short".into()), ..Default::default() };
        assert!(short.resolve(ServeSettings::default(), Some(Path::new("/d"))).is_err());
    }
}
