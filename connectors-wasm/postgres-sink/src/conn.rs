//! One PostgreSQL connection over a blocking `std::net::TcpStream`, or TLS
//! over it: start-up, password authentication (SCRAM-SHA-256, MD5,
//! cleartext) and the statements the sink runs. Messages are encoded and
//! decoded by `postgres-protocol`; this module only moves them and reads the
//! answers.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use bytes::{BufMut, BytesMut};
use danube_connector_tls::{Tls, Transport, tls_failure};
use fallible_iterator::FallibleIterator;
use postgres_protocol::Oid;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::{ErrorResponseBody, Message};
use postgres_protocol::message::frontend;

use crate::config::Server;

/// Why a connection attempt or a statement failed.
#[derive(Debug)]
pub enum PgError {
    /// The connection is gone or unusable (refused, reset, timed out, a
    /// garbled answer): connect again later.
    Connection(String),
    /// Authentication could not be carried out on our side (a method this
    /// client does not speak, a SCRAM exchange that does not verify).
    Auth(String),
    /// The server answered with an error.
    Server(DbError),
    /// A message or parameter could not be encoded: a limit of the protocol
    /// was passed, and trying again will not help.
    Encoding(String),
    /// TLS could not be set up: the server does not offer it, or its
    /// certificate was refused. The configuration or the server must change.
    Tls(String),
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Connection(m) | PgError::Auth(m) | PgError::Encoding(m) | PgError::Tls(m) => {
                f.write_str(m)
            }
            PgError::Server(e) => e.fmt(f),
        }
    }
}

/// An `ErrorResponse`: the fields the sink reports and acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    /// Non-localized severity: ERROR, FATAL or PANIC.
    pub severity: String,
    /// SQLSTATE, e.g. `23505`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

/// What an SQLSTATE means to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The rows themselves were refused (classes 21, 22, 23): find the
    /// failing records and dead-letter them.
    Data,
    /// Passing trouble on the server (classes 08, 40, 53, 57, 58, 55P03):
    /// retry.
    Transient,
    /// The user or password was refused (class 28).
    Authentication,
    /// Anything else (a missing table or column, a permission, ...): an
    /// operator must step in.
    Other,
}

impl DbError {
    pub fn class(&self) -> ErrorClass {
        match self.code.get(..2).unwrap_or_default() {
            "21" | "22" | "23" => ErrorClass::Data,
            "08" | "40" | "53" | "57" | "58" => ErrorClass::Transient,
            "28" => ErrorClass::Authentication,
            _ if self.code == "55P03" => ErrorClass::Transient,
            _ => ErrorClass::Other,
        }
    }

    /// Whether the server ends the session after this error.
    fn ends_session(&self) -> bool {
        self.severity == "FATAL" || self.severity == "PANIC"
    }

    fn parse(body: &ErrorResponseBody) -> Result<DbError, PgError> {
        let mut error = DbError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
        };
        let mut localized_severity = String::new();
        let mut fields = body.fields();
        while let Some(field) = fields.next().map_err(garbled)? {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => error.severity = value,
                b'S' => localized_severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                _ => {}
            }
        }
        if error.severity.is_empty() {
            // Servers before 9.6 send only the localized severity.
            error.severity = localized_severity;
        }
        Ok(error)
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

fn garbled(e: io::Error) -> PgError {
    PgError::Connection(format!("garbled message from the server: {e}"))
}

/// A connected, authenticated session, idle between statements.
pub struct Connection {
    stream: Transport,
    /// Bytes read from the server and not yet parsed.
    buf: BytesMut,
    /// Messages to send, encoded.
    out: BytesMut,
}

impl Connection {
    /// Connects, authenticates and waits until the server is ready for
    /// queries. The connect timeout bounds each step; afterwards the query
    /// timeout bounds each answer.
    pub fn connect(server: &Server) -> Result<Connection, PgError> {
        let place = format!("{}:{}", server.host, server.port);
        let addrs = (server.host.as_str(), server.port)
            .to_socket_addrs()
            .map_err(|e| PgError::Connection(format!("cannot resolve {place}: {e}")))?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, server.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream
            .ok_or_else(|| PgError::Connection(format!("cannot connect to {place}: {last}")))?;
        let io = |e: io::Error| PgError::Connection(format!("{place}: {e}"));
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_read_timeout(Some(server.connect_timeout))
            .map_err(io)?;
        stream
            .set_write_timeout(Some(server.connect_timeout))
            .map_err(io)?;
        let stream = match &server.tls {
            None => Transport::Plain(stream),
            Some(tls) => start_tls(tls, stream)?,
        };
        let mut conn = Connection {
            stream,
            buf: BytesMut::with_capacity(8192),
            out: BytesMut::with_capacity(8192),
        };
        conn.start_up(server)?;
        let tcp = conn.stream.tcp();
        tcp.set_read_timeout(Some(server.query_timeout))
            .map_err(io)?;
        tcp.set_write_timeout(Some(server.query_timeout))
            .map_err(io)?;
        Ok(conn)
    }

    fn start_up(&mut self, server: &Server) -> Result<(), PgError> {
        frontend::startup_message(
            [
                ("user", server.user.as_str()),
                ("database", server.database.as_str()),
                ("application_name", "danube-postgres-sink"),
                ("client_encoding", "UTF8"),
            ],
            &mut self.out,
        )
        .map_err(|e| encoding(&e))?;
        self.send()?;
        let password = server.password.0.as_bytes();
        loop {
            match self.receive()? {
                Message::AuthenticationOk => break,
                Message::AuthenticationCleartextPassword => {
                    self.password_message(password)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(server.user.as_bytes(), password, body.salt());
                    self.password_message(hash.as_bytes())?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(m) = mechanisms.next().map_err(garbled)? {
                        scram |= m == SCRAM_SHA_256;
                    }
                    if !scram {
                        return Err(PgError::Auth(
                            "the server offers no SASL mechanism this client speaks (SCRAM-SHA-256)"
                                .into(),
                        ));
                    }
                    self.scram(password)?;
                }
                Message::ErrorResponse(body) => {
                    return Err(PgError::Server(DbError::parse(&body)?));
                }
                _ => {
                    return Err(PgError::Auth(
                        "the server asks for an authentication method this client does not speak \
                         (supported: SCRAM-SHA-256, MD5, password)"
                            .into(),
                    ));
                }
            }
        }
        self.until_ready().map(drop)
    }

    fn password_message(&mut self, password: &[u8]) -> Result<(), PgError> {
        frontend::password_message(password, &mut self.out).map_err(|e| encoding(&e))?;
        self.send()
    }

    /// The SCRAM-SHA-256 exchange, up to the server's final message.
    fn scram(&mut self, password: &[u8]) -> Result<(), PgError> {
        let failed = |e: io::Error| PgError::Auth(format!("SCRAM-SHA-256 exchange failed: {e}"));
        let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
        frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut self.out)
            .map_err(failed)?;
        self.send()?;
        match self.receive()? {
            Message::AuthenticationSaslContinue(body) => {
                scram.update(body.data()).map_err(failed)?
            }
            Message::ErrorResponse(body) => return Err(PgError::Server(DbError::parse(&body)?)),
            _ => return Err(unexpected("during SCRAM authentication")),
        }
        frontend::sasl_response(scram.message(), &mut self.out).map_err(failed)?;
        self.send()?;
        match self.receive()? {
            Message::AuthenticationSaslFinal(body) => scram.finish(body.data()).map_err(failed),
            Message::ErrorResponse(body) => Err(PgError::Server(DbError::parse(&body)?)),
            _ => Err(unexpected("during SCRAM authentication")),
        }
    }

    /// Runs SQL without parameters (the simple query protocol).
    pub fn simple(&mut self, sql: &str) -> Result<(), PgError> {
        frontend::query(sql, &mut self.out).map_err(|e| encoding(&e))?;
        self.send()?;
        self.until_ready().map(drop)
    }

    /// Runs one statement with binary parameters of the given types in its
    /// own implicit transaction (parse, bind, execute, sync: one round trip)
    /// and returns how many rows it affected.
    pub fn execute(
        &mut self,
        sql: &str,
        types: &[Oid],
        params: &[BytesMut],
    ) -> Result<u64, PgError> {
        frontend::parse("", sql, types.iter().copied(), &mut self.out).map_err(|e| encoding(&e))?;
        frontend::bind(
            "",
            "",
            [1], // every parameter in binary
            params,
            |param, out| {
                out.put_slice(param);
                Ok(postgres_protocol::IsNull::No)
            },
            [1],
            &mut self.out,
        )
        .map_err(|e| match e {
            frontend::BindError::Conversion(e) => encoding(&*e),
            frontend::BindError::Serialization(e) => encoding(&e),
        })?;
        frontend::execute("", 0, &mut self.out).map_err(|e| encoding(&e))?;
        frontend::sync(&mut self.out);
        self.send()?;
        self.until_ready()
    }

    /// Reads answers until `ReadyForQuery`; returns the rows the last
    /// command affected, or the first error the server reported.
    fn until_ready(&mut self) -> Result<u64, PgError> {
        let mut error = None;
        let mut rows = 0;
        loop {
            match self.receive()? {
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(PgError::Server(e)),
                        None => Ok(rows),
                    };
                }
                Message::ErrorResponse(body) => {
                    let e = DbError::parse(&body)?;
                    if e.ends_session() {
                        return Err(PgError::Server(e));
                    }
                    error.get_or_insert(e);
                }
                Message::CommandComplete(body) => {
                    let tag = body.tag().map_err(garbled)?;
                    rows = tag
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                }
                _ => {}
            }
        }
    }

    fn send(&mut self) -> Result<(), PgError> {
        // A TLS stream holds what it has not sent until flushed.
        let result = self
            .stream
            .write_all(&self.out)
            .and_then(|()| self.stream.flush());
        self.out.clear();
        result.map_err(|e| lost("sending to the server", &e))
    }

    /// The next message, skipping the asynchronous ones (notices, parameter
    /// changes, notifications).
    fn receive(&mut self) -> Result<Message, PgError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match Message::parse(&mut self.buf).map_err(garbled)? {
                Some(
                    Message::NoticeResponse(_)
                    | Message::ParameterStatus(_)
                    | Message::NotificationResponse(_),
                ) => continue,
                Some(message) => return Ok(message),
                None => {}
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(PgError::Connection(
                        "the server closed the connection".into(),
                    ));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(lost("waiting for the server", &e)),
            }
        }
    }

    /// Ends the session politely.
    pub fn terminate(mut self) {
        frontend::terminate(&mut self.out);
        let _ = self.send();
        self.stream.shutdown();
    }
}

/// Asks the server for TLS (`SSLRequest`) and runs the handshake over the
/// same socket.
fn start_tls(tls: &Tls, mut tcp: TcpStream) -> Result<Transport, PgError> {
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    let mut answer = [0u8];
    tcp.write_all(&request)
        .and_then(|()| tcp.read_exact(&mut answer))
        .map_err(|e| lost("asking the server for TLS", &e))?;
    match answer[0] {
        b'S' => Transport::tls(tls, tcp).map_err(|e| match tls_failure(&e) {
            Some(failure) => PgError::Tls(format!(
                "TLS handshake failed: {failure}; check `sslmode`, `ca_file` and `tls_server_name`"
            )),
            None => lost("during the TLS handshake", &e),
        }),
        b'N' => Err(PgError::Tls(
            "the server does not accept TLS; set sslmode = disable or enable ssl on the server"
                .into(),
        )),
        other => Err(PgError::Connection(format!(
            "unexpected answer {other:#04x} to the TLS request"
        ))),
    }
}

fn lost(doing: &str, e: &io::Error) -> PgError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            PgError::Connection(format!("no progress {doing} before the timeout"))
        }
        _ => PgError::Connection(format!("connection lost {doing}: {e}")),
    }
}

fn unexpected(when: &str) -> PgError {
    PgError::Connection(format!("unexpected message from the server {when}"))
}

fn encoding(e: &dyn std::error::Error) -> PgError {
    PgError::Encoding(format!("encoding a message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str) -> DbError {
        DbError {
            severity: "ERROR".into(),
            code: code.into(),
            message: "m".into(),
            detail: None,
        }
    }

    #[test]
    fn sqlstates_map_to_what_the_sink_does() {
        for (code, class) in [
            ("23505", ErrorClass::Data),
            ("23502", ErrorClass::Data),
            ("22P02", ErrorClass::Data),
            ("21000", ErrorClass::Data),
            ("08006", ErrorClass::Transient),
            ("57P01", ErrorClass::Transient),
            ("57P03", ErrorClass::Transient),
            ("40001", ErrorClass::Transient),
            ("55P03", ErrorClass::Transient),
            ("28P01", ErrorClass::Authentication),
            ("28000", ErrorClass::Authentication),
            ("42P01", ErrorClass::Other),
            ("3D000", ErrorClass::Other),
            ("", ErrorClass::Other),
        ] {
            assert_eq!(error(code).class(), class, "{code}");
        }
    }

    #[test]
    fn error_responses_parse() {
        let mut buf = BytesMut::new();
        buf.put_u8(b'E');
        let body: &[u8] =
            b"SFEHLER\0VFATAL\0C28P01\0Mpassword authentication failed for user \"u\"\0\0";
        buf.put_i32(4 + body.len() as i32);
        buf.put_slice(body);
        let Some(Message::ErrorResponse(body)) = Message::parse(&mut buf).unwrap() else {
            panic!("not an error response")
        };
        let e = DbError::parse(&body).unwrap();
        assert_eq!(e.severity, "FATAL");
        assert!(e.ends_session());
        assert_eq!(e.class(), ErrorClass::Authentication);
        assert_eq!(
            e.to_string(),
            "password authentication failed for user \"u\" (SQLSTATE 28P01)"
        );
    }
}
