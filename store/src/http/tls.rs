//! The HTTPS listener's certificate (a throw-away CA and a serving certificate for loopback) and
//! the kubeconfig that trusts it.

use super::ServeError;
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::sync::Arc;

/// A freshly made CA and a serving certificate it signed, for `localhost` and `127.0.0.1`.
#[derive(Debug, Clone)]
pub struct SelfSignedCert {
    /// The CA certificate (PEM): what clients trust.
    pub ca_pem: String,
    /// The serving certificate (PEM).
    pub cert_pem: String,
    /// The serving certificate (DER).
    pub cert_der: Vec<u8>,
    /// The serving key (PKCS#8 DER).
    pub key_der: Vec<u8>,
}

impl SelfSignedCert {
    /// Makes a CA and a serving certificate for these names (DNS names or IP addresses), plus
    /// `localhost` and `127.0.0.1`.
    pub fn generate(extra_names: &[String]) -> Result<Self, ServeError> {
        let tls = |e: rcgen::Error| ServeError::Tls(e.to_string());
        let ca_key = KeyPair::generate().map_err(tls)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "bosun-ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(tls)?;
        let issuer = Issuer::new(ca, ca_key);
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(extra_names.iter().cloned());
        let key = KeyPair::generate().map_err(tls)?;
        let mut params = CertificateParams::new(names).map_err(tls)?;
        params.distinguished_name.push(DnType::CommonName, "bosun-apiserver");
        let cert = params.signed_by(&key, &issuer).map_err(tls)?;
        Ok(Self { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), cert_der: cert.der().to_vec(), key_der: key.serialize_der() })
    }

    /// A rustls server configuration serving this certificate, offering HTTP/2 and HTTP/1.1 by
    /// ALPN (kube-apiserver's order: clients that speak HTTP/2 get it; WebSocket and SPDY
    /// upgrades, which ask for `http/1.1` or nothing, get HTTP/1.1).
    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, ServeError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = vec![rustls::pki_types::CertificateDer::from(self.cert_der.clone())];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServeError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A kubeconfig (YAML) with one cluster, user and context named `bosun`, pointing at `server`
/// and trusting `ca_pem` when given. The user carries a placeholder bearer token (the server does
/// not authenticate yet), which keeps kubectl from prompting for a password over HTTPS.
pub fn kubeconfig_yaml(server: &str, ca_pem: Option<&str>) -> String {
    let trust = match ca_pem {
        Some(pem) => format!("certificate-authority-data: {}", base64::engine::general_purpose::STANDARD.encode(pem)),
        None => "insecure-skip-tls-verify: false".to_owned(),
    };
    let trust = if server.starts_with("https://") { format!("\n    {trust}") } else { String::new() };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: bosun
  cluster:
    server: {server}{trust}
users:
- name: bosun
  user:
    token: bosun
contexts:
- name: bosun
  context:
    cluster: bosun
    user: bosun
    namespace: default
current-context: bosun
preferences: {{}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_loads_into_rustls() -> Result<(), ServeError> {
        let cert = SelfSignedCert::generate(&[])?;
        assert!(cert.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        cert.server_config()?;
        Ok(())
    }

    #[test]
    fn the_kubeconfig_trusts_the_ca() {
        let yaml = kubeconfig_yaml("https://127.0.0.1:6443", Some("PEM"));
        assert!(yaml.contains("server: https://127.0.0.1:6443\n    certificate-authority-data: UEVN\n"), "{yaml}");
        let plain = kubeconfig_yaml("http://127.0.0.1:8080", None);
        assert!(!plain.contains("certificate-authority"));
    }
}
