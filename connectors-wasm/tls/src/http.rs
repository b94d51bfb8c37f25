//! HTTP(S) for the connectors that speak HTTP (clickhouse-sink,
//! http-sink): a ureq agent built from the same TLS keys as every other
//! connection, the URL check every such connector makes, and how to tell a
//! refused certificate from a server that is away.
//!
//! ureq brings its own rustls connector, so the keys reach it as DER
//! certificates through [`TlsFiles::certificates`] rather than as the
//! [`Tls`](crate::Tls) client configuration.

use std::time::Duration;

use rustls::pki_types::CertificateDer;
use ureq::Agent;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

use crate::{TlsFiles, tls_failure};

/// How an agent connects and how long it waits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Opening a connection, TLS handshake included.
    pub connect: Duration,
    /// Each step of a request: sending it, waiting for the answer, reading
    /// the answer.
    pub step: Duration,
}

/// A ureq agent that trusts `files`' CA (or the Mozilla roots), presents
/// their client certificate if set, and hands every status back as a
/// response rather than an error, for the connector to class — redirects
/// too: a write is not sent on to another address than the configured one.
pub fn agent(files: &TlsFiles<'_>, timeouts: Timeouts) -> Result<Agent, String> {
    // Per-step timeouts only: a global or per-call timeout would make ureq
    // resolve names on a thread of its own, which WASI has not.
    let step = Some(timeouts.step);
    Ok(Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls_config(files)?)
        .timeout_connect(Some(timeouts.connect))
        .timeout_send_request(step)
        .timeout_send_body(step)
        .timeout_recv_response(step)
        .timeout_recv_body(step)
        .build()
        .into())
}

/// Checks that `url` (the value of the key `key`) is `http://` or
/// `https://`, and that TLS keys are set only for `https://`.
pub fn check_url(key: &str, url: &str, files: &TlsFiles<'_>) -> Result<(), String> {
    if url.starts_with("http://") {
        if let Some(tls_key) = files.first_set() {
            return Err(format!(
                "`{tls_key}` is set but `{key}` is http://: use https:// or remove `{tls_key}`"
            ));
        }
        Ok(())
    } else if url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "`{key}` must start with http:// or https://, not `{url}`"
        ))
    }
}

/// The TLS refusal behind a request that got no answer: a certificate or
/// protocol failure is for the configuration to fix; `None` is a server
/// that is away or slow, worth trying again.
pub fn handshake_failure(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(failure) => Some(failure),
        ureq::Error::Io(io) => tls_failure(io),
        _ => None,
    }
}

/// ureq's TLS settings from the TLS keys: `ca_file` or the built-in Mozilla
/// roots, and the client certificate if set.
fn tls_config(files: &TlsFiles<'_>) -> Result<TlsConfig, String> {
    let certificates = files.certificates()?;
    let ureq_certs = |certs: &[CertificateDer<'_>]| -> Vec<Certificate<'static>> {
        certs
            .iter()
            .map(|c| Certificate::from_der(c).to_owned())
            .collect()
    };
    let roots = match &certificates.ca {
        Some(ca) => RootCerts::new_with_certs(&ureq_certs(ca)),
        None => RootCerts::WebPki,
    };
    let client = match (&certificates.client, files.client_key_file) {
        (Some((chain, _)), Some(key_file)) => {
            // ureq takes a key as DER only with a kind it does not export, so
            // it parses the PEM file (already checked) itself.
            let key = std::fs::read(key_file)
                .map_err(|e| e.to_string())
                .and_then(|pem| PrivateKey::from_pem(&pem).map_err(|e| e.to_string()))
                .map_err(|e| format!("`client_key_file` {}: {e}", key_file.display()))?;
            Some(ClientCert::new_with_certs(&ureq_certs(chain), key))
        }
        _ => None,
    };
    Ok(TlsConfig::builder()
        .root_certs(roots)
        .client_cert(client)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn urls_are_checked_with_their_tls_keys() {
        let none = TlsFiles::default();
        assert!(check_url("url", "http://a:1", &none).is_ok());
        assert!(check_url("url", "https://a:1", &none).is_ok());
        let e = check_url("url", "ftp://a", &none).unwrap_err();
        assert!(
            e.contains("`url` must start with http:// or https://"),
            "{e}"
        );
        let ca = TlsFiles {
            ca_file: Some(Path::new("/ca.pem")),
            ..TlsFiles::default()
        };
        let e = check_url("endpoint", "http://a:1", &ca).unwrap_err();
        assert!(
            e.contains("`ca_file` is set but `endpoint` is http://"),
            "{e}"
        );
        assert!(check_url("url", "https://a:1", &ca).is_ok());
    }
}
