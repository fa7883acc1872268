//! HTTPS for the ingress listener: the certificate and key from
//! `[server] tls_cert` / `tls_key`, and their reload without a restart.
//!
//! Portal for ArcGIS delivers only to an HTTPS receiver whose certificate it
//! trusts, and certificates are renewed every few months. The listener keeps
//! running across a renewal: [`ReloadingCert`] is the rustls certificate
//! resolver, holding the current [`CertifiedKey`] behind a lock that
//! [`TlsIngress::reload`] swaps (on SIGHUP, see `app.rs`). A new pair that
//! does not load leaves the old one in place, so a half-copied renewal never
//! takes ingress down.
//!
//! The crypto provider is always `ring`, the one reqwest's rustls already
//! compiles in, so the binary carries a single provider.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key could not be used. Every message names the file;
/// none ever contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("{path}: no PEM certificate found ({reason})")]
    Certificate {
        /// The file.
        path: String,
        /// What the PEM parser said.
        reason: String,
    },
    /// The key file holds no usable PEM private key. The parser's own words
    /// are left out on purpose: they may quote the file.
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1 expected)")]
    Key {
        /// The file.
        path: String,
    },
    /// The key is not one rustls can sign with, or does not belong to the certificate.
    #[error("{key_path} does not fit {cert_path}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert_path: String,
        /// The key file.
        key_path: String,
        /// What rustls said.
        reason: String,
    },
    /// rustls refused the server configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The crypto provider for every TLS use of the relay.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })
}

/// Reads a PEM certificate chain (leaf first) and its private key, and
/// checks that they belong together.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Certificate {
            path: cert_path.display().to_string(),
            reason: "the file has no CERTIFICATE block".into(),
        });
    }
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Key {
        path: key_path.display().to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert_path: cert_path.display().to_string(),
        key_path: key_path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The rustls certificate resolver that can be reloaded from its files.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    /// Loads the pair for the first time.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<ReloadingCert, TlsError> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Reads the files again and serves the new pair to new connections;
    /// on error the pair in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(load_certified_key(&self.cert_path, &self.key_path)?);
        // A poisoned lock only means a reader panicked; the Arc inside is whole.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The pair served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// What the ingress listener needs to speak HTTPS.
#[derive(Clone)]
pub struct TlsIngress {
    acceptor: TlsAcceptor,
    certs: Arc<ReloadingCert>,
}

impl TlsIngress {
    /// Loads the certificate and key and builds the acceptor (TLS 1.2 and
    /// 1.3, HTTP/1.1 over ALPN: the server speaks only HTTP/1.1).
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<TlsIngress, TlsError> {
        let certs = Arc::new(ReloadingCert::load(cert_path, key_path)?);
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIngress {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs,
        })
    }

    /// The acceptor that wraps accepted TCP connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Re-reads the certificate and key; see [`ReloadingCert::reload`].
    pub fn reload(&self) -> Result<(), TlsError> {
        self.certs.reload()
    }

    /// The certificate chain served now (leaf first), for tests and logs.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.certs.current().cert.clone()
    }

    /// The certificate file this listener reloads from.
    pub fn cert_path(&self) -> &Path {
        &self.certs.cert_path
    }
}

impl fmt::Debug for TlsIngress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIngress")
            .field("certs", &self.certs)
            .finish()
    }
}
