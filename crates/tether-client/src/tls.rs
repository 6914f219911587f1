//! Transport security for clients: the rustls configuration for
//! `https://`/`wss://` daemons (the system's roots, plus a CA file given
//! with `ClientOptions::ca_cert` or `tether --ca-cert`), and the rule
//! that a token never travels in clear text to another host.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::ClientError;

/// A rustls client configuration trusting the system's roots and, if
/// given, the certificates in `ca_cert` (PEM). Uses the ring provider.
pub fn client_config(ca_cert: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let bad = |why: String| ClientError::Tls { why };
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: a CA file may be all
    // that is needed.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_cert {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("{}: {e}", path.display())))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(bad(format!("{}: no certificate in the file (expected PEM)", path.display())));
        }
        for c in certs {
            roots.add(c).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        }
    }
    // ring rather than aws-lc-rs (see the server's `tls`).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Whether a token may be sent to `url`: always over TLS (`https`,
/// `wss`), and in clear text only to this host (a loopback address or
/// `localhost`), where nobody on a network can read it.
pub fn token_may_travel(url: &str) -> bool {
    let Ok(u) = url::Url::parse(url) else { return false };
    match u.scheme() {
        "https" | "wss" => true,
        _ => match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        },
    }
}
