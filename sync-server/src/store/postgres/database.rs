//! Where the database is and how to reach it: the store URL as libpq reads it, with TLS when
//! the URL names the CA that signed the database server's certificate.
//!
//! `postgres://USER@HOST/DB?sslrootcert=/etc/gridwork/db-ca.pem` connects over TLS (rustls,
//! the stack the server already serves phones with), verifying the server's certificate against
//! that CA and the host name; `sslmode=require` or `verify-full` without `sslrootcert` is refused,
//! because a connection that encrypts to a server it never verified protects nothing against
//! whoever sits in between. Without either, the connection is plain (a database on loopback or
//! a private network; SECURITY.md). The same URL is handed to `pg_dump` and `pg_restore`, which
//! read `sslrootcert` themselves.

use std::sync::Arc;

use postgres::config::SslMode;
use postgres::{Client, NoTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Result, ServerError};

/// A database to connect to, in one schema when a district's.
#[derive(Clone)]
pub(crate) struct Database {
    config: postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

impl Database {
    pub(crate) fn parse(url: &str) -> Result<Database> {
        // libpq's names, read here: the client library knows only some of them, and a
        // connection with a CA is always verified (libpq's `verify-full`).
        let (rest, ca) = take_param(url, "sslrootcert");
        let (rest, mode) = take_param(&rest, "sslmode");
        let wants_tls = match mode.as_deref() {
            None | Some("disable" | "allow" | "prefer") => false,
            Some("require" | "verify-ca" | "verify-full") => true,
            Some(other) => {
                return Err(ServerError::BadRequest(format!(
                    "sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
                )))
            }
        };
        if mode.as_deref() == Some("disable") && ca.is_some() {
            return Err(ServerError::BadRequest("sslmode=disable with sslrootcert: choose one".into()));
        }
        let mut config: postgres::Config =
            rest.parse().map_err(|e| ServerError::BadRequest(format!("{url:?} is not a PostgreSQL URL: {e}")))?;
        let tls = match ca {
            Some(path) => {
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(client_config(&path)?))
            }
            None if wants_tls => {
                return Err(ServerError::BadRequest(
                    "the store URL asks for TLS (sslmode) but names no CA: add sslrootcert=PATH, the CA \
                     that signed the database server's certificate"
                        .into(),
                ))
            }
            None => {
                // `prefer` (the default) would try TLS first; without a CA there is nothing to
                // verify a server with, so the connection is plainly plain.
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        Ok(Database { config, tls })
    }

    /// The same database, with `schema` alone on every connection's search path.
    pub(crate) fn in_schema(mut self, schema: &str) -> Database {
        self.config.options(&format!("-c search_path={schema}"));
        self
    }

    pub(crate) fn connect(&self) -> std::result::Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
    }
}

/// Removes `key=VALUE` from a URL's query, returning the URL without it and the decoded value.
fn take_param(url: &str, key: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_owned(), None) };
    let mut value = None;
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == key {
            value = Some(v.into_owned());
        } else {
            kept.append_pair(&k, &v);
        }
    }
    let kept = kept.finish();
    (if kept.is_empty() { base.to_owned() } else { format!("{base}?{kept}") }, value)
}

fn client_config(ca_path: &str) -> Result<rustls::ClientConfig> {
    let bad = |e: String| ServerError::BadRequest(format!("sslrootcert={ca_path}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_path)
        .map_err(|e| bad(format!("cannot read it ({e})")))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| bad(format!("not a CA certificate ({e})")))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Internal(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_taken_out_of_the_url_and_the_rest_kept() {
        assert_eq!(take_param("postgres://u@h/db", "sslrootcert"), ("postgres://u@h/db".into(), None));
        assert_eq!(
            take_param("postgres://u@h/db?sslrootcert=%2Fetc%2Fca.pem", "sslrootcert"),
            ("postgres://u@h/db".into(), Some("/etc/ca.pem".into()))
        );
        assert_eq!(
            take_param("postgres://u@h/db?application_name=gw&sslrootcert=/ca.pem", "sslrootcert"),
            ("postgres://u@h/db?application_name=gw".into(), Some("/ca.pem".into()))
        );
    }

    #[test]
    fn tls_without_a_ca_is_refused_and_a_missing_ca_file_is_named() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let e = Database::parse(&format!("postgres://u@127.0.0.1/db?sslmode={mode}")).expect_err("no CA");
            assert!(e.to_string().contains("sslrootcert"), "{e}");
        }
        assert!(Database::parse("postgres://u@127.0.0.1/db?sslmode=bogus").is_err());
        let e = Database::parse("postgres://u@127.0.0.1/db?sslrootcert=/no/such/ca.pem").expect_err("no file");
        assert!(e.to_string().contains("/no/such/ca.pem"), "{e}");
        let plain = Database::parse("postgres://u@127.0.0.1/db").expect("plain");
        assert!(plain.tls.is_none() && plain.config.get_ssl_mode() == SslMode::Disable);
    }
}
