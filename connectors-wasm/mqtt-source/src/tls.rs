//! TLS for the MQTT connection: rustls (with ring) over the guest's
//! `std::net::TcpStream`. Trust comes from `ca_file` (a PEM bundle in a
//! directory granted with `[sandbox] dirs`) or, without it, from the Mozilla
//! roots compiled into the module — the sandbox has no system store.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// What a TLS connection needs, checked and loaded at start.
#[derive(Debug, Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    /// The name the broker's certificate must carry.
    pub server_name: ServerName<'static>,
}

/// The `[mqtt]` TLS keys as written.
pub struct TlsFiles<'a> {
    pub ca_file: Option<&'a Path>,
    pub client_cert_file: Option<&'a Path>,
    pub client_key_file: Option<&'a Path>,
    pub server_name: &'a str,
}

impl Tls {
    /// Reads the certificate files and builds the client configuration; the
    /// error names the key and the file.
    pub fn load(files: &TlsFiles<'_>) -> Result<Tls, String> {
        let mut roots = RootCertStore::empty();
        match files.ca_file {
            Some(path) => {
                let certs = read_certs(path, "ca_file")?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!(
                        "`ca_file` {}: no usable CA certificate in it",
                        path.display()
                    ));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS set-up: {e}"))?
                .with_root_certificates(roots);
        let config = match (files.client_cert_file, files.client_key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "client_cert_file")?;
                let key = read_file(key, "client_key_file").and_then(|pem| {
                    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                        format!("`client_key_file` {}: no private key: {e}", key.display())
                    })
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("`client_cert_file`/`client_key_file`: {e}"))?
            }
            _ => {
                return Err(
                    "`client_cert_file` and `client_key_file` go together: set both or neither"
                        .into(),
                );
            }
        };
        let server_name = ServerName::try_from(files.server_name.to_string()).map_err(|_| {
            format!(
                "`tls_server_name` {:?} is not a DNS name or IP address",
                files.server_name
            )
        })?;
        Ok(Tls {
            config: Arc::new(config),
            server_name,
        })
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

/// The byte stream MQTT runs on: plain TCP, or TLS over it.
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
