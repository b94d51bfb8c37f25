//! TLS for the connectors: rustls (with ring) over the guest's
//! `std::net::TcpStream`. Trust comes from `ca_file` (a PEM bundle in a
//! directory granted with `[sandbox] dirs`) or, without it, from the Mozilla
//! roots compiled into the module — the sandbox has no system store. Every
//! connector names the keys alike: `ca_file`, `client_cert_file`,
//! `client_key_file`, `tls_server_name`.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "ureq")]
pub mod http;

pub use rustls;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme, StreamOwned,
};

/// What a TLS connection needs, checked and loaded at start.
#[derive(Debug, Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry.
    pub server_name: ServerName<'static>,
}

/// The TLS keys of a connector's table as written.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFiles<'a> {
    pub ca_file: Option<&'a Path>,
    pub client_cert_file: Option<&'a Path>,
    pub client_key_file: Option<&'a Path>,
    /// `tls_server_name`: the name to verify when it is not the host.
    pub server_name: Option<&'a str>,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The chain up to a trusted root, and the server's name.
    Full,
    /// The chain only: any name signed by the trusted roots is accepted.
    Chain,
    /// Nothing: the connection is encrypted but the server unauthenticated.
    Nothing,
}

/// The certificates the TLS keys name, read and parsed.
pub struct Certificates {
    /// `ca_file`'s certificates; `None` trusts the built-in Mozilla roots.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// `client_cert_file`'s chain and `client_key_file`'s key, for servers
    /// that authenticate clients by certificate.
    pub client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl TlsFiles<'_> {
    /// The first key that is set, so that a connection without TLS can refuse
    /// keys it would otherwise ignore.
    pub fn first_set(&self) -> Option<&'static str> {
        [
            ("ca_file", self.ca_file.is_some()),
            ("client_cert_file", self.client_cert_file.is_some()),
            ("client_key_file", self.client_key_file.is_some()),
            ("tls_server_name", self.server_name.is_some()),
        ]
        .into_iter()
        .find_map(|(key, set)| set.then_some(key))
    }

    /// Reads the certificate files; the error names the key and the file.
    pub fn certificates(&self) -> Result<Certificates, String> {
        let ca = self
            .ca_file
            .map(|path| read_certs(path, "ca_file"))
            .transpose()?;
        let client = match (self.client_cert_file, self.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "client_cert_file")?;
                let key = read_file(key, "client_key_file").and_then(|pem| {
                    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                        format!("`client_key_file` {}: no private key: {e}", key.display())
                    })
                })?;
                Some((chain, key))
            }
            _ => {
                return Err(
                    "`client_cert_file` and `client_key_file` go together: set both or neither"
                        .into(),
                );
            }
        };
        Ok(Certificates { ca, client })
    }
}

impl Tls {
    /// Reads the certificate files and builds the client configuration for a
    /// connection to `host` (or `tls_server_name`); the error names the key
    /// and the file.
    pub fn load(files: &TlsFiles<'_>, host: &str, verify: Verify) -> Result<Tls, String> {
        let certificates = files.certificates()?;
        let mut roots = RootCertStore::empty();
        match (certificates.ca, files.ca_file) {
            (Some(certs), Some(path)) => {
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!(
                        "`ca_file` {}: no usable CA certificate in it",
                        path.display()
                    ));
                }
            }
            _ => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let builder = match verify {
            Verify::Full => builder.with_root_certificates(roots),
            Verify::Chain | Verify::Nothing => {
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("TLS set-up: {e}"))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Partial { webpki, verify }))
            }
        };
        let config = match certificates.client {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("`client_cert_file`/`client_key_file`: {e}"))?,
        };
        let (key, name) = match files.server_name {
            Some(name) => ("`tls_server_name`", name),
            None => ("the host", host),
        };
        let server_name = ServerName::try_from(name.to_string()).map_err(|_| {
            format!(
                "{key} {name:?} is not a DNS name or IP address, so no certificate can match it; \
                 set `tls_server_name`"
            )
        })?;
        Ok(Tls {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// The rustls error inside an I/O error from a TLS stream: a certificate or
/// protocol failure, which trying again will not cure (unlike a lost
/// connection).
pub fn tls_failure(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref()
}

/// Checks less of the certificate than [`Verify::Full`]; handshake
/// signatures are still verified, so the key exchange is with the
/// certificate's owner.
struct Partial {
    webpki: Arc<WebPkiServerVerifier>,
    verify: Verify,
}

impl fmt::Debug for Partial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Partial({:?})", self.verify)
    }
}

impl ServerCertVerifier for Partial {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.verify == Verify::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn read_file(path: &Path, key: &str) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| {
        format!(
            "`{key}` {}: {e} (the file must be in a directory granted with [sandbox] dirs)",
            path.display()
        )
    })
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "`{key}` {}: not a PEM certificate file: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("`{key}` {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The byte stream a connector's protocol runs on: plain TCP, or TLS over it.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    /// Wraps `tcp` in TLS and completes the handshake, so that a certificate
    /// problem surfaces at connect with its reason rather than at first read.
    pub fn tls(tls: &Tls, mut tcp: TcpStream) -> io::Result<Transport> {
        let mut conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        Ok(Transport::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    /// The TCP socket underneath, for timeouts and shutdown.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => s.get_ref(),
        }
    }

    /// Closes the connection (with a TLS close_notify first).
    pub fn shutdown(&mut self) {
        if let Transport::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
        let _ = self.tcp().shutdown(Shutdown::Both);
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that exists and holds no PEM object.
    const NOT_PEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");

    fn error(files: TlsFiles<'_>) -> String {
        Tls::load(&files, "db.example.com", Verify::Full).unwrap_err()
    }

    #[test]
    fn refusals_name_the_key_and_the_file() {
        let missing = error(TlsFiles {
            ca_file: Some(Path::new("/nonexistent/ca.pem")),
            ..TlsFiles::default()
        });
        assert!(
            missing.starts_with("`ca_file` /nonexistent/ca.pem: ")
                && missing.contains("[sandbox] dirs"),
            "{missing}"
        );
        let empty = error(TlsFiles {
            client_cert_file: Some(Path::new(NOT_PEM)),
            client_key_file: Some(Path::new(NOT_PEM)),
            ..TlsFiles::default()
        });
        assert_eq!(
            empty,
            format!("`client_cert_file` {NOT_PEM}: no certificate in it")
        );
        let alone = error(TlsFiles {
            client_key_file: Some(Path::new(NOT_PEM)),
            ..TlsFiles::default()
        });
        assert!(alone.contains("go together"), "{alone}");
        let host = Tls::load(&TlsFiles::default(), "not a name", Verify::Full).unwrap_err();
        assert!(
            host.starts_with("the host \"not a name\" is not a DNS name"),
            "{host}"
        );
        let files = TlsFiles {
            server_name: Some("a/b"),
            ..TlsFiles::default()
        };
        let name = Tls::load(&files, "127.0.0.1", Verify::Full).unwrap_err();
        assert!(name.starts_with("`tls_server_name` \"a/b\""), "{name}");
    }

    #[test]
    fn the_server_name_is_the_host_unless_tls_server_name_says_otherwise() {
        for verify in [Verify::Full, Verify::Chain, Verify::Nothing] {
            let tls = Tls::load(&TlsFiles::default(), "127.0.0.1", verify).unwrap();
            assert_eq!(tls.server_name.to_str(), "127.0.0.1");
        }
        let files = TlsFiles {
            server_name: Some("db.example.com"),
            ..TlsFiles::default()
        };
        let tls = Tls::load(&files, "127.0.0.1", Verify::Full).unwrap();
        assert_eq!(tls.server_name.to_str(), "db.example.com");
    }

    #[test]
    fn the_first_key_set_is_named() {
        assert_eq!(TlsFiles::default().first_set(), None);
        let files = TlsFiles {
            client_key_file: Some(Path::new("k.pem")),
            server_name: Some("x"),
            ..TlsFiles::default()
        };
        assert_eq!(files.first_set(), Some("client_key_file"));
    }
}
