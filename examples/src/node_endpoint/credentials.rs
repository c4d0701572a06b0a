//! The credentials the API server and the node endpoints share: a CA that signs the endpoints'
//! serving certificates and a bearer token the API server presents, kept in one Secret.

use super::NodeEndpointError;
use bosun_core::k8s_openapi::ByteString;
use bosun_core::k8s_openapi::api::core::v1::Secret;
use bosun_core::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use bosun_core::{Api, Client, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The namespace of the credentials' Secret.
pub const SECRET_NAMESPACE: &str = "kube-system";
/// The name of the credentials' Secret.
pub const SECRET_NAME: &str = "bosun-node-endpoint";

const TOKEN: &str = "token";
const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const CA_NAME: &str = "bosun-node-endpoint-ca";

/// The shared secret of the node endpoints: the CA (certificate and key) their serving
/// certificates come from, and the token that callers must present.
#[derive(Clone)]
pub struct Credentials {
    token: String,
    ca_pem: String,
    ca_key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("token", &"<redacted>").finish_non_exhaustive()
    }
}

fn tls(error: impl std::fmt::Display) -> NodeEndpointError {
    NodeEndpointError::Tls(error.to_string())
}

/// The CA's parameters: the same every time, so that an issuer rebuilt from them and the stored
/// key signs certificates that chain to the stored CA certificate.
fn ca_params() -> CertificateParams {
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, CA_NAME);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca
}

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Credentials {
    /// A new CA and a new random token.
    pub fn generate() -> Result<Self, NodeEndpointError> {
        let key = KeyPair::generate().map_err(tls)?;
        let cert = ca_params().self_signed(&key).map_err(tls)?;
        let mut random = [0u8; 32];
        crypto().secure_random.fill(&mut random).map_err(|_| NodeEndpointError::Tls("no secure random numbers".into()))?;
        let token = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { token, ca_pem: cert.pem(), ca_key_pem: key.serialize_pem() })
    }

    /// The cluster's credentials from their Secret, made and stored first if there are none yet
    /// (when two processes race, the first write wins and both use it).
    pub async fn load_or_create(client: &Arc<dyn Client>) -> Result<Self, NodeEndpointError> {
        let secrets = Api::<Secret>::namespaced(client.clone(), SECRET_NAMESPACE);
        if let Some(secret) = secrets.get_opt(SECRET_NAME).await.map_err(NodeEndpointError::Credentials)? {
            return Self::from_secret(&secret);
        }
        let fresh = Self::generate()?;
        match secrets.create(&fresh.to_secret(), &PostParams::default()).await {
            Ok(_) => {
                tracing::info!(secret = %format!("{SECRET_NAMESPACE}/{SECRET_NAME}"), "created the node endpoint credentials");
                Ok(fresh)
            }
            Err(e) if e.is_already_exists() => Self::from_secret(&secrets.get(SECRET_NAME).await.map_err(NodeEndpointError::Credentials)?),
            Err(e) => Err(NodeEndpointError::Credentials(e)),
        }
    }

    /// Reads the credentials out of their Secret.
    pub fn from_secret(secret: &Secret) -> Result<Self, NodeEndpointError> {
        let data = secret.data.as_ref();
        let field = |key: &str| {
            data.and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| NodeEndpointError::BadCredentials(format!("no {key:?}")))
        };
        let credentials = Self { token: field(TOKEN)?, ca_pem: field(CA_CERT)?, ca_key_pem: field(CA_KEY)? };
        // Fail now rather than at the first request.
        credentials.issuer().map_err(|e| NodeEndpointError::BadCredentials(e.to_string()))?;
        credentials.ca_der().map_err(|e| NodeEndpointError::BadCredentials(e.to_string()))?;
        Ok(credentials)
    }

    /// The Secret that stores these credentials.
    pub fn to_secret(&self) -> Secret {
        let data = BTreeMap::from([
            (TOKEN.to_owned(), ByteString(self.token.clone().into_bytes())),
            (CA_CERT.to_owned(), ByteString(self.ca_pem.clone().into_bytes())),
            (CA_KEY.to_owned(), ByteString(self.ca_key_pem.clone().into_bytes())),
        ]);
        Secret {
            metadata: ObjectMeta {
                name: Some(SECRET_NAME.to_owned()),
                namespace: Some(SECRET_NAMESPACE.to_owned()),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(data),
            ..Secret::default()
        }
    }

    /// The token callers present as `Authorization: Bearer <token>`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CA certificate (PEM) that node endpoints' certificates chain to.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Whether an `Authorization` header carries the token (compared in constant time).
    pub fn authorizes(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else { return false };
        let expected = self.token.as_bytes();
        presented.len() == expected.len() && presented.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, NodeEndpointError> {
        Ok(Issuer::new(ca_params(), KeyPair::from_pem(&self.ca_key_pem).map_err(tls)?))
    }

    fn ca_der(&self) -> Result<CertificateDer<'static>, NodeEndpointError> {
        use rustls::pki_types::pem::PemObject as _;
        CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).map_err(tls)
    }

    /// A TLS server configuration with a fresh serving certificate for these names (DNS names or
    /// IP addresses), signed by the CA.
    pub fn server_config(&self, names: &[String]) -> Result<Arc<rustls::ServerConfig>, NodeEndpointError> {
        let key = KeyPair::generate().map_err(tls)?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(tls)?;
        params.distinguished_name.push(DnType::CommonName, "bosun-node-endpoint");
        let cert = params.signed_by(&key, &self.issuer()?).map_err(tls)?;
        let chain = vec![cert.der().clone()];
        let mut config = rustls::ServerConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .map_err(tls)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A TLS client configuration that trusts only the CA.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, NodeEndpointError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()?).map_err(tls)?;
        let mut config = rustls::ClientConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_survive_their_secret() -> Result<(), NodeEndpointError> {
        let credentials = Credentials::generate()?;
        let back = Credentials::from_secret(&credentials.to_secret())?;
        assert_eq!(back.token(), credentials.token());
        assert_eq!(back.ca_pem(), credentials.ca_pem());
        back.server_config(&["127.0.0.1".into()])?;
        back.client_config()?;
        Ok(())
    }

    #[test]
    fn only_the_token_authorizes() -> Result<(), NodeEndpointError> {
        let credentials = Credentials::generate()?;
        let good = format!("Bearer {}", credentials.token());
        assert!(credentials.authorizes(Some(good.as_bytes())));
        assert!(!credentials.authorizes(None));
        assert!(!credentials.authorizes(Some(b"Bearer bosun")));
        assert!(!credentials.authorizes(Some(credentials.token().as_bytes())));
        assert!(!credentials.authorizes(Some(&good.as_bytes()[..good.len() - 1])));
        Ok(())
    }

    #[test]
    fn a_damaged_secret_is_refused() {
        let mut secret = Credentials::generate().map(|c| c.to_secret()).unwrap_or_default();
        if let Some(data) = secret.data.as_mut() {
            data.insert(CA_KEY.into(), ByteString(b"not a key".to_vec()));
        }
        assert!(matches!(Credentials::from_secret(&secret), Err(NodeEndpointError::BadCredentials(_))));
    }
}
