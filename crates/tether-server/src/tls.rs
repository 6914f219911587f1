//! TLS on the daemon's listener (`--tls-cert`/`--tls-key`): rustls with
//! the ring provider, the certificate chain and key read from PEM files at
//! start and again on [`Tls::reload`] (SIGHUP), so a renewed certificate
//! is taken without a restart; connections already open keep theirs. A
//! reload that fails keeps serving with the previous pair.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct TlsError {
    /// The file (or both, for a pair that does not match).
    pub path: String,
    /// What is wrong with it.
    pub why: String,
}

/// The listener's TLS settings, replaceable while serving.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// Read per handshake, replaced by a reload: a short std lock, never
    /// held across an await.
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl Tls {
    /// Reads the certificate chain and the key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, TlsError> {
        let cfg = read(cert, key)?;
        Ok(Arc::new(Tls { cert: cert.to_owned(), key: key.to_owned(), current: RwLock::new(Arc::new(cfg)) }))
    }

    /// Reads the files again; new handshakes use the new pair. On an
    /// error the previous pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let cfg = read(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(cfg);
        Ok(())
    }

    /// An acceptor with the current pair.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        tokio_rustls::TlsAcceptor::from(cfg)
    }
}

fn read(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let err = |p: &Path, why: String| TlsError { path: p.display().to_string(), why };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(cert, "no certificate in the file (expected PEM)".into()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, format!("no usable private key: {e}")))?;
    // ring rather than aws-lc-rs (which would add a C toolchain build of
    // its own); it lacks only the post-quantum key exchanges.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| TlsError {
            path: format!("{} and {}", cert.display(), key.display()),
            why: e.to_string(),
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
