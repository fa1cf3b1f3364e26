//! Trust for the sync connection: the district's own CA, pinned by its SHA-256 fingerprint.
//!
//! A district runs its own sync server with a certificate from its own CA; phones carry no
//! public CA list for it. The enrolment code carries the CA's fingerprint (lowercase hex SHA-256
//! of its DER). On every handshake the server presents its chain including the CA; the device
//! accepts it only if one certificate of the chain has the pinned fingerprint *and* the server's
//! certificate verifies against that certificate as the only trust anchor (name, validity,
//! signature: the ordinary WebPKI checks, through rustls).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, Result};

/// Lowercase hex SHA-256 of a certificate's DER: the form enrolment codes carry.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Normalises a fingerprint as typed or scanned: `sha256:`-prefixed, colons, upper case.
pub fn parse_fingerprint(s: &str) -> Result<String> {
    let hex: String = s.trim().trim_start_matches("sha256:").chars().filter(|c| *c != ':').collect();
    let hex = hex.to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CoreError::InvalidConfig {
            field: "ca_fingerprint".into(),
            reason: "expected the 64 hex digits of a SHA-256 fingerprint; scan the enrolment code again".into(),
        });
    }
    Ok(hex)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The last certificate a pinned client refused, and why. The HTTP stack wraps rustls' error
/// beyond recognition, so the verifier reports refusals here for the caller to tell an untrusted
/// server from a network failure.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<std::sync::Mutex<Option<String>>>);

impl Refusals {
    /// Takes the last refusal, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    fn record(&self, why: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }
}

#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
    refusals: Refusals,
}

impl PinnedCa {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates.iter().find(|c| fingerprint(c) == self.fingerprint).ok_or_else(|| {
            rustls::Error::General(format!(
                "the server's certificate chain does not contain the district CA {}",
                self.fingerprint
            ))
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| rustls::Error::General(format!("district CA unusable: {e}")))?;
        let others: Vec<CertificateDer<'_>> = intermediates.iter().filter(|c| *c != ca).cloned().collect();
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verdict = self.verify(end_entity, intermediates, server_name, ocsp_response, now);
        if let Err(e) = &verdict {
            self.refusals.record(e.to_string());
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration that trusts only the CA with `fingerprint`, and where its refusals are
/// reported.
pub fn client_config(fingerprint: &str) -> Result<(rustls::ClientConfig, Refusals)> {
    let fingerprint = parse_fingerprint(fingerprint)?;
    let provider = provider();
    let refusals = Refusals::default();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CoreError::Network { message: format!("TLS setup: {e}"), retryable: false })?
        .dangerous() // not dangerous here: the verifier below does the full WebPKI check
        .with_custom_certificate_verifier(Arc::new(PinnedCa { fingerprint, provider, refusals: refusals.clone() }))
        .with_no_client_auth();
    Ok((config, refusals))
}

/// A client configuration with no trust anchor at all, for plain-HTTP (loopback) clients.
pub fn trust_nobody() -> Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CoreError::Network { message: format!("TLS setup: {e}"), retryable: false })?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// Whether `url` may be used: HTTPS with a pinned CA, or plain HTTP to this machine only (tests
/// and the demo). Anything else would send a worker's reports in the clear.
pub fn check_transport(url: &str, fingerprint: Option<&str>) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("https://") {
        if fingerprint.is_none() && !rest.is_empty() {
            return Err(CoreError::InvalidConfig {
                field: "ca_fingerprint".into(),
                reason: "an HTTPS server needs the district CA fingerprint from the enrolment code".into(),
            });
        }
        return Ok(());
    }
    if let Some(rest) = lower.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Ok(());
        }
        return Err(CoreError::InvalidConfig {
            field: "server".into(),
            reason: format!("plain HTTP is only allowed to this machine; use https:// for {host}"),
        });
    }
    Err(CoreError::InvalidConfig { field: "server".into(), reason: format!("not an http(s) URL: {url}") })
}
