//! HTTPS for the local target: a throw-away CA made at run time with
//! `rcgen`, and the rustls server configuration that serves a certificate
//! it issued.
//!
//! Nothing here is for production: the CA lives in memory for one test or
//! bench run, and the only way a client trusts it is by being told to
//! (`SUNDIAL_EXTRA_CA_FILE`, or [`sundial::fire::ClientOptions::extra_roots`]).

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

/// Names the issued server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Errors of making the CA or a server configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen could not make a key or sign a certificate.
    #[error("cannot make test certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the key or certificate.
    #[error("cannot build TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Which protocols the target offers by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// Only `http/1.1`: clients that prefer h2 must fall back.
    Http1Only,
    /// `h2`, then `http/1.1`: what most real HTTPS servers offer.
    Http2,
}

/// A throw-away certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A fresh CA with a new key (ECDSA P-256: cheap to make and to verify).
    pub fn generate() -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        // A name of its own, so that another test CA is an unknown issuer
        // rather than a same-named one with a bad signature.
        let name = format!("Sundial throw-away test CA {:016x}", rand::random::<u64>());
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM encoded (what `SUNDIAL_EXTRA_CA_FILE` holds).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate, DER encoded (for `ClientOptions::extra_roots`).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Write [`Self::cert_pem`] to `path`.
    pub fn write_pem(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.cert_pem())
    }

    /// Issue a server certificate for [`SERVER_NAMES`] and build the TLS
    /// configuration of a target offering `alpn`.
    pub fn server_config(&self, alpn: Alpn) -> Result<TlsConfig, TlsError> {
        let mut params = CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));

        // aws-lc-rs explicitly: the workspace's one crypto provider.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)?;
        config.alpn_protocols = match alpn {
            Alpn::Http1Only => vec![b"http/1.1".to_vec()],
            Alpn::Http2 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        Ok(TlsConfig {
            server: Arc::new(config),
            alpn,
        })
    }
}

/// TLS settings of a target: see [`TestCa::server_config`].
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub(super) server: Arc<ServerConfig>,
    alpn: Alpn,
}

impl TlsConfig {
    /// What the target offers by ALPN.
    pub fn alpn(&self) -> Alpn {
        self.alpn
    }

    /// The rustls server configuration, for a test's own TLS server.
    pub fn rustls(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }
}
