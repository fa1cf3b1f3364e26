//! The district's own certificate authority and the server's TLS listener.
//!
//! A district's sync server is not on the public internet's PKI: `admin init-tls` makes a
//! district CA and a server certificate signed by it under `DATA_DIR/tls/`. Enrolment codes carry
//! the CA's SHA-256 fingerprint; phones trust exactly that CA (gridwork-core's `tls` module).
//! The server presents its certificate followed by the CA, so a phone can find the CA in the chain
//! and check the fingerprint. The CA key is written beside the certificates (mode 0600) so that
//! the server certificate can be renewed; move it offline if the district's policy asks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::{Result, ServerError};

/// The files of a district's TLS setup, under `DATA_DIR/tls/`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub dir: PathBuf,
}

impl TlsFiles {
    pub fn in_data_dir(data_dir: &Path) -> Self {
        TlsFiles { dir: data_dir.join("tls") }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The server's certificate followed by the CA's.
    pub fn server_chain(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn exists(&self) -> bool {
        self.server_chain().exists() && self.server_key().exists() && self.ca_cert().exists()
    }

    /// The CA's fingerprint, as enrolment codes carry it.
    pub fn ca_fingerprint(&self) -> Result<String> {
        let der = CertificateDer::from_pem_file(self.ca_cert())
            .map_err(|e| internal(format!("cannot read {}: {e}", self.ca_cert().display())))?;
        Ok(fingerprint(&der))
    }

    /// Makes a district CA (unless one exists) and a server certificate for `hosts` (DNS names or
    /// IP addresses the phones will use). Returns the CA fingerprint.
    pub fn init(&self, hosts: &[String]) -> Result<String> {
        if hosts.is_empty() {
            return Err(ServerError::BadRequest("name at least one host the phones will connect to".into()));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| internal(format!("cannot create {}: {e}", self.dir.display())))?;
        let ca_key = if self.ca_cert().exists() && self.ca_key().exists() {
            // Renewing the server certificate keeps the CA, so enrolled phones keep trusting it.
            // The issuer is rebuilt from the same parameters: signing needs only its name and key.
            let key =
                KeyPair::from_pem(&read(&self.ca_key())?).map_err(|e| internal(format!("CA key unreadable: {e}")))?;
            Issuer::new(ca_params()?, key)
        } else {
            let params = ca_params()?;
            let key = KeyPair::generate().map_err(tls_err)?;
            let cert = params.self_signed(&key).map_err(tls_err)?;
            write_private(&self.ca_key(), &key.serialize_pem())?;
            write(&self.ca_cert(), &cert.pem())?;
            Issuer::new(params, key)
        };
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(tls_err)?;
        params.distinguished_name.push(DnType::CommonName, hosts[0].clone());
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = params.signed_by(&key, &ca_key).map_err(tls_err)?;
        write_private(&self.server_key(), &key.serialize_pem())?;
        write(&self.server_chain(), &format!("{}{}", cert.pem(), read(&self.ca_cert())?))?;
        self.ca_fingerprint()
    }

    /// The rustls configuration the listener serves with.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(self.server_chain())
            .map_err(|e| internal(format!("cannot read {}: {e}", self.server_chain().display())))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| internal(format!("{}: {e}", self.server_chain().display())))?;
        let key = PrivateKeyDer::from_pem_file(self.server_key())
            .map_err(|e| internal(format!("cannot read {}: {e}", self.server_key().display())))?;
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| internal(format!("server certificate and key do not fit: {e}")))
    }
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    params.distinguished_name.push(DnType::CommonName, "Gridwork district CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2044, 1, 1);
    Ok(params)
}

/// Lowercase hex SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn internal(m: String) -> ServerError {
    ServerError::Internal(m)
}

fn tls_err(e: impl std::fmt::Display) -> ServerError {
    internal(format!("TLS: {e}"))
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| internal(format!("cannot read {}: {e}", p.display())))
}

fn write(p: &Path, s: &str) -> Result<()> {
    std::fs::write(p, s).map_err(|e| internal(format!("cannot write {}: {e}", p.display())))
}

/// Keys are readable by the server's user only.
fn write_private(p: &Path, s: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(p).map_err(|e| internal(format!("cannot write {}: {e}", p.display())))?;
    f.write_all(s.as_bytes()).map_err(|e| internal(format!("cannot write {}: {e}", p.display())))
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop, so one slow or
/// hostile client cannot hold up everyone else's.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
}

/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

impl TlsListener {
    /// Must be called inside a tokio runtime.
    pub fn new(tcp: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (tx, ready) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(_) => {
                        // Out of file descriptors or similar: back off instead of spinning.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task only ends when this listener is gone; wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
