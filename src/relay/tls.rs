//! Outbound TLS settings for `relay.tls` (SPEC §3, §6).
//!
//! - `none`: never STARTTLS.
//! - `opportunistic` (default, Postfix `may`): STARTTLS when offered, with
//!   no certificate check (an unauthenticated encrypted session beats plain
//!   text, and most MX certificates would not verify anyway); if the
//!   handshake fails, the delivery is retried at once in plain text.
//! - `required` (Postfix `encrypt`): STARTTLS must be offered and succeed;
//!   the certificate is not checked.
//! - `verify` (Postfix `secure`, `match=nexthop:dot-nexthop`): the chain
//!   must verify against the system roots and name the next hop — the
//!   recipient domain for MX routes, the transport map's `[host]` — or an
//!   MX host inside that domain (`verify_name`); never just whatever name
//!   an unauthenticated DNS answer gave.
//!
//! Only the `ring` provider is used: two providers in one process make
//! rustls' default-provider lookups panic.

use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::TlsPolicy;

/// The client configs a policy needs, built once at start.
#[derive(Clone)]
pub struct TlsClient {
    pub policy: TlsPolicy,
    /// Encrypts without checking the certificate (`opportunistic`, `required`).
    pub unverified: Arc<ClientConfig>,
    /// Checks chain and name (`verify`); built only for that policy.
    pub verified: Option<Arc<ClientConfig>>,
}

impl TlsClient {
    pub fn new(policy: TlsPolicy) -> Result<TlsClient> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertCheck(provider.clone())))
            .with_no_client_auth();
        let verified = if policy == TlsPolicy::Verify {
            let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
                .context("loading the system's trusted certificates")?;
            Some(Arc::new(
                ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .context("TLS protocol versions")?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth(),
            ))
        } else {
            None
        };
        Ok(TlsClient {
            policy,
            unverified: Arc::new(unverified),
            verified,
        })
    }

    /// The config to use for a STARTTLS under this policy (`None` for `none`).
    pub fn config(&self) -> Option<Arc<ClientConfig>> {
        match self.policy {
            TlsPolicy::None => None,
            TlsPolicy::Opportunistic | TlsPolicy::Required => Some(self.unverified.clone()),
            TlsPolicy::Verify => self.verified.clone(),
        }
    }
}

/// Accepts any certificate but still checks the handshake signatures, so
/// the session is at least encrypted to whoever holds the key it showed.
#[derive(Debug)]
struct NoCertCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name `tls = "verify"` checks a certificate against (Postfix's
/// `secure` level with `match=nexthop:dot-nexthop`): the next hop (the
/// recipient domain for MX routes, the transport map's `[host]`), or the
/// MX host's name when it lies inside the next hop's domain. An MX name
/// outside it came from DNS without authentication: a forged MX answer
/// with a valid certificate for the forger's own name must not pass.
pub fn verify_name(mx: &str, nexthop: &str, ip: std::net::IpAddr) -> ServerName<'static> {
    let mx = mx.trim_end_matches('.').to_ascii_lowercase();
    let nexthop = nexthop.trim_end_matches('.').to_ascii_lowercase();
    let inside = mx == nexthop || mx.ends_with(&format!(".{nexthop}"));
    server_name(if inside { &mx } else { &nexthop }, ip)
}

/// The TLS server name for a host we connect to: its name, or its address.
pub fn server_name(name: &str, ip: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(name.to_string()).unwrap_or_else(|_| ServerName::IpAddress(ip.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(n: &ServerName<'_>) -> String {
        match n {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn verify_names_the_next_hop_or_an_mx_inside_it() {
        let ip = "192.0.2.1".parse().unwrap();
        assert_eq!(
            dns(&verify_name("mx1.example.jp.", "example.jp", ip)),
            "mx1.example.jp"
        );
        assert_eq!(
            dns(&verify_name("example.jp", "example.jp", ip)),
            "example.jp"
        );
        // An MX outside the domain (DNS said so, unauthenticated): the
        // certificate must still name example.jp.
        assert_eq!(
            dns(&verify_name("mail.attacker.test", "example.jp", ip)),
            "example.jp"
        );
        assert_eq!(
            dns(&verify_name("notexample.jp", "example.jp", ip)),
            "example.jp"
        );
    }
}
