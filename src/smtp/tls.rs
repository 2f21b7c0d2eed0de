//! Inbound STARTTLS: the server certificate from `[smtp] tls_cert/tls_key`.
//!
//! One certificate served whatever the SNI, and also when there is none:
//! most MTAs (Postfix among them) send no SNI at all.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The crypto provider used everywhere in mx2 (two enabled at once makes rustls panic).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the acceptor from PEM files, with errors naming the file.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{}: cannot read certificate", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{}: bad certificate PEM: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{}: no certificate found", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow!("{}: cannot load private key: {e}", key.display()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
