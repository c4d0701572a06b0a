//! TLS termination: certificates from `kubernetes.io/tls` Secrets, chosen per SNI host from the
//! current route table, so certificate changes apply to the next handshake without a restart.

use super::routes::RouteTable;
use bosun_core::k8s_openapi::api::core::v1::Secret;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Errors reading a TLS Secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The Secret lacks `tls.crt` or `tls.key`.
    #[error("secret has no {key}")]
    Missing {
        /// The missing key.
        key: &'static str,
    },
    /// The PEM could not be parsed.
    #[error("parse {what}")]
    Pem {
        /// Which part.
        what: &'static str,
        /// The cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls rejected the key or certificate.
    #[error("load key")]
    Key(#[source] rustls::Error),
}

fn field<'a>(secret: &'a Secret, key: &'static str) -> Result<std::borrow::Cow<'a, [u8]>, TlsError> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(std::borrow::Cow::Borrowed(&v.0));
    }
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Ok(std::borrow::Cow::Owned(v.as_bytes().to_vec()));
    }
    Err(TlsError::Missing { key })
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Loads the certificate chain and key of a `kubernetes.io/tls` Secret.
pub fn certified_key_from_secret(secret: &Secret) -> Result<Arc<CertifiedKey>, TlsError> {
    let crt = field(secret, "tls.crt")?;
    let key = field(secret, "tls.key")?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&crt).collect::<Result<_, _>>().map_err(|source| TlsError::Pem { what: "tls.crt", source })?;
    if chain.is_empty() {
        return Err(TlsError::Missing { key: "tls.crt" });
    }
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|source| TlsError::Pem { what: "tls.key", source })?;
    CertifiedKey::from_der(chain, key, &provider()).map(Arc::new).map_err(TlsError::Key)
}

/// Certificates by host name (exact or `*.` wildcard), with a fallback for clients without SNI.
#[derive(Debug, Default, Clone)]
pub struct CertStore {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    fallback: Option<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Adds a certificate for a host (`*.example.com` for a wildcard).
    pub fn insert(&mut self, host: &str, key: Arc<CertifiedKey>) {
        self.by_host.entry(host.to_ascii_lowercase()).or_insert(key);
    }

    /// Sets the certificate for clients that send no (or an unknown) server name, if none is set yet.
    pub fn set_fallback(&mut self, key: Arc<CertifiedKey>) {
        self.fallback.get_or_insert(key);
    }

    /// The certificate for a server name.
    pub fn find(&self, host: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(host) = host.map(str::to_ascii_lowercase) {
            if let Some(k) = self.by_host.get(&host) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = host.split_once('.')
                && let Some(k) = self.by_host.get(&format!("*.{parent}"))
            {
                return Some(k.clone());
            }
        }
        self.fallback.clone()
    }

    /// True when there is no certificate.
    pub fn is_empty(&self) -> bool {
        self.fallback.is_none()
    }
}

/// Picks certificates from whatever route table is current.
#[derive(Debug)]
pub(crate) struct RouteCertResolver {
    pub(crate) routes: Arc<RwLock<Arc<RouteTable>>>,
}

impl ResolvesServerCert for RouteCertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let routes = self.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        routes.certs.find(hello.server_name())
    }
}

/// A rustls server config offering HTTP/2 and HTTP/1.1 with per-SNI certificates.
pub(crate) fn server_config(resolver: Arc<RouteCertResolver>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
