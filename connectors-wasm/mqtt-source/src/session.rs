//! One MQTT 3.1.1 connection over a blocking `std::net::TcpStream` (TLS over
//! it when configured): connect, subscribe, read packets with timeouts, write
//! acknowledgements.
//!
//! `mqttrs` encodes CONNECT and SUBSCRIBE and decodes whole packets; framing,
//! the small acknowledgement packets and oversized PUBLISH packets are handled
//! here.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use mqttrs::{
    Connect, ConnectReturnCode, Packet, Pid, Protocol, QosPid, Subscribe, SubscribeReturnCodes,
    SubscribeTopic,
};

use crate::config::{Qos, Settings};
use danube_connector_tls::{Transport, tls_failure};

/// A PUBLISH received from the broker.
#[derive(Debug)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: Qos,
    pub pid: Option<u16>,
    pub retain: bool,
    pub dup: bool,
}

/// What one parsed packet means to the connector.
#[derive(Debug)]
pub enum Event {
    Publish(Message),
    /// A PUBLISH larger than `max_packet_size`: its payload was skipped.
    Oversized {
        topic: String,
        qos: Qos,
        pid: Option<u16>,
        size: usize,
    },
    /// Anything handled here (PINGRESP, PUBREL → PUBCOMP, ...).
    Control,
    Connack {
        session_present: bool,
        code: ConnectReturnCode,
    },
    Suback {
        pid: u16,
        codes: Vec<SubscribeReturnCodes>,
    },
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Network, timeout or protocol trouble: try again later.
    Io(String),
    /// The broker refused the CONNECT (credentials, client id, ...).
    Refused(ConnectReturnCode),
    /// The broker refused a subscription.
    SubscribeRefused(String),
    /// The TLS handshake failed (certificate, name or protocol): retrying
    /// the same settings will not help.
    Tls(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => f.write_str(e),
            ConnectError::Refused(code) => {
                write!(f, "the broker refused the connection: {}", refusal(*code))
            }
            ConnectError::SubscribeRefused(e) => f.write_str(e),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Accepted => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => {
            "unacceptable protocol version (the broker does not speak MQTT 3.1.1)"
        }
        ConnectReturnCode::RefusedIdentifierRejected => "client identifier rejected",
        ConnectReturnCode::ServerUnavailable => "server unavailable",
        ConnectReturnCode::BadUsernamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}

pub struct Conn {
    stream: Transport,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    start: usize,
    /// Bytes of an oversized packet still to discard.
    skip: usize,
    chunk: Vec<u8>,
    max_packet: usize,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    keep_alive: Duration,
    timeout: Duration,
    /// PUBLISH packets that arrived while waiting for SUBACK.
    pub early: std::collections::VecDeque<Event>,
}

const SUBSCRIBE_PID: u16 = 1;

impl Conn {
    /// Connects, sends CONNECT and waits for CONNACK; returns the connection
    /// and whether the broker still had a session for this client id.
    pub fn connect(s: &Settings) -> Result<(Conn, bool), ConnectError> {
        let timeout = Duration::from_secs(s.connection_timeout_secs);
        let addrs: Vec<_> = (s.host.as_str(), s.port)
            .to_socket_addrs()
            .map_err(|e| ConnectError::Io(format!("cannot resolve {}:{}: {e}", s.host, s.port)))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(st) => {
                    stream = Some(st);
                    break;
                }
                Err(e) => last = Some(format!("cannot connect to {addr}: {e}")),
            }
        }
        let Some(stream) = stream else {
            return Err(ConnectError::Io(last.unwrap_or_else(|| {
                format!("{}:{} resolves to no address", s.host, s.port)
            })));
        };
        // The callers name the broker in their messages.
        let io = |e: io::Error| ConnectError::Io(e.to_string());
        if s.tcp_nodelay {
            // Best effort: the option only changes latency, never correctness.
            let _ = stream.set_nodelay(true);
        }
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let stream = match &s.tls {
            None => Transport::Plain(stream),
            Some(tls) => {
                stream.set_read_timeout(Some(timeout)).map_err(io)?;
                Transport::tls(tls, stream).map_err(|e| match tls_failure(&e) {
                    Some(failure) => ConnectError::Tls(failure.to_string()),
                    None => ConnectError::Io(format!("TLS handshake: {e}")),
                })?
            }
        };
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            skip: 0,
            chunk: vec![0; 64 * 1024],
            max_packet: s.max_packet_size,
            last_sent: Instant::now(),
            ping_sent: None,
            keep_alive: Duration::from_secs(s.keep_alive_secs as u64),
            timeout,
            early: Default::default(),
        };
        let connect = Packet::Connect(Connect {
            protocol: Protocol::MQTT311,
            keep_alive: s.keep_alive_secs,
            client_id: &s.client_id,
            clean_session: s.clean_session,
            last_will: None,
            username: s.username.as_deref(),
            password: s.password.as_deref(),
        });
        let size = 64
            + s.client_id.len()
            + s.username.as_ref().map_or(0, |u| u.len())
            + s.password.as_ref().map_or(0, |p| p.len());
        conn.send_packet(&connect, size).map_err(io)?;
        let deadline = Instant::now() + timeout;
        match conn.next_event_until(deadline).map_err(io)? {
            Some(Event::Connack {
                session_present,
                code: ConnectReturnCode::Accepted,
            }) => Ok((conn, session_present)),
            Some(Event::Connack { code, .. }) => Err(ConnectError::Refused(code)),
            Some(_) => Err(ConnectError::Io(
                "the broker sent a packet before CONNACK".into(),
            )),
            None => Err(ConnectError::Io(format!("no CONNACK within {timeout:?}"))),
        }
    }

    /// Subscribes to `filters` and waits for SUBACK. Messages that arrive
    /// meanwhile are kept in `early`. Returns the granted QoS per filter.
    pub fn subscribe(
        &mut self,
        filters: &[(String, Qos)],
    ) -> Result<Vec<Option<u8>>, ConnectError> {
        let io = |e: io::Error| ConnectError::Io(format!("subscribe: {e}"));
        let topics = filters
            .iter()
            .map(|(f, q)| SubscribeTopic {
                topic_path: f.clone(),
                qos: q.to_mqttrs(),
            })
            .collect();
        let pid = Pid::try_from(SUBSCRIBE_PID).expect("non-zero");
        let size = 16 + filters.iter().map(|(f, _)| f.len() + 3).sum::<usize>();
        self.send_packet(&Packet::Subscribe(Subscribe { pid, topics }), size)
            .map_err(io)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.next_event_until(deadline).map_err(io)? {
                Some(Event::Suback { pid, codes }) if pid == SUBSCRIBE_PID => {
                    if codes.len() != filters.len() {
                        return Err(ConnectError::Io(
                            "SUBACK does not answer every filter".into(),
                        ));
                    }
                    return Ok(codes
                        .into_iter()
                        .map(|c| match c {
                            SubscribeReturnCodes::Success(q) => Some(match q {
                                mqttrs::QoS::AtMostOnce => 0,
                                mqttrs::QoS::AtLeastOnce => 1,
                                mqttrs::QoS::ExactlyOnce => 2,
                            }),
                            SubscribeReturnCodes::Failure => None,
                        })
                        .collect());
                }
                Some(e @ (Event::Publish(_) | Event::Oversized { .. })) => self.early.push_back(e),
                Some(_) => {}
                None => {
                    return Err(ConnectError::Io(format!(
                        "no SUBACK within {:?}",
                        self.timeout
                    )));
                }
            }
        }
    }

    /// The next packet, reading until `deadline`; `None` once it passed.
    pub fn next_event_until(&mut self, deadline: Instant) -> io::Result<Option<Event>> {
        loop {
            if let Some(e) = self.parse()? {
                return Ok(Some(e));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.fill(deadline - now)?;
        }
    }

    /// Reads what arrives within `wait` (at least 1 ms). `Ok(false)`: nothing.
    pub fn fill(&mut self, wait: Duration) -> io::Result<bool> {
        let wait = wait.max(Duration::from_millis(1));
        self.stream.tcp().set_read_timeout(Some(wait))?;
        match self.stream.read(&mut self.chunk) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            )),
            Ok(n) => {
                if self.start > 0 && self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                self.buf.extend_from_slice(&self.chunk[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Parses one packet from the bytes already read.
    pub fn parse(&mut self) -> io::Result<Option<Event>> {
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len() - self.start);
            self.start += n;
            self.skip -= n;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        let avail = &self.buf[self.start..];
        let Some((hlen, rem)) = fixed_header(avail)? else {
            return Ok(None);
        };
        let typ = avail[0] >> 4;
        if rem > self.max_packet {
            if typ != 3 {
                return Err(proto(format!(
                    "a packet of type {typ} announces {rem} bytes"
                )));
            }
            // Oversized PUBLISH: read its topic and packet id, skip the rest.
            let qos = (avail[0] >> 1) & 3;
            let Some(topic_len) = avail
                .get(hlen..hlen + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            else {
                return Ok(None);
            };
            let need = hlen + 2 + topic_len + if qos > 0 { 2 } else { 0 };
            if need > hlen + rem {
                return Err(proto(format!(
                    "a PUBLISH of {rem} bytes announces a {topic_len}-byte topic"
                )));
            }
            if avail.len() < need {
                return Ok(None);
            }
            let topic =
                String::from_utf8_lossy(&avail[hlen + 2..hlen + 2 + topic_len]).into_owned();
            let pid = (qos > 0).then(|| u16::from_be_bytes([avail[need - 2], avail[need - 1]]));
            let qos = match qos {
                0 => Qos::AtMostOnce,
                1 => Qos::AtLeastOnce,
                2 => Qos::ExactlyOnce,
                _ => return Err(proto("invalid QoS 3 in PUBLISH".into())),
            };
            self.skip = hlen + rem;
            return Ok(Some(Event::Oversized {
                topic,
                qos,
                pid,
                size: rem,
            }));
        }
        if avail.len() < hlen + rem {
            return Ok(None);
        }
        check_shape(avail[0], &avail[hlen..hlen + rem])?;
        let packet = mqttrs::decode_slice(&avail[..hlen + rem])
            .map_err(|e| proto(format!("undecodable {}: {e:?}", packet_name(typ))))?
            .ok_or_else(|| proto("incomplete packet".into()))?;
        let event = match packet {
            Packet::Publish(p) => {
                let (qos, pid) = match p.qospid {
                    QosPid::AtMostOnce => (Qos::AtMostOnce, None),
                    QosPid::AtLeastOnce(pid) => (Qos::AtLeastOnce, Some(pid.get())),
                    QosPid::ExactlyOnce(pid) => (Qos::ExactlyOnce, Some(pid.get())),
                };
                Event::Publish(Message {
                    topic: p.topic_name.to_string(),
                    payload: p.payload.to_vec(),
                    qos,
                    pid,
                    retain: p.retain,
                    dup: p.dup,
                })
            }
            Packet::Connack(c) => Event::Connack {
                session_present: c.session_present,
                code: c.code,
            },
            Packet::Suback(s) => Event::Suback {
                pid: s.pid.get(),
                codes: s.return_codes,
            },
            Packet::Pubrel(pid) => {
                let pid = pid.get();
                self.start += hlen + rem;
                // QoS 2, last step: the message was stored (PUBREC went
                // out only after Danube acknowledged it); complete it.
                self.write_raw(&ack(0x70, pid))?;
                return Ok(Some(Event::Control));
            }
            Packet::Pingresp => {
                self.ping_sent = None;
                Event::Control
            }
            _ => Event::Control,
        };
        self.start += hlen + rem;
        Ok(Some(event))
    }

    /// Sends PINGREQ when the connection has been quiet for half the
    /// keep-alive; fails when a ping went unanswered too long.
    pub fn keep_alive(&mut self) -> io::Result<()> {
        if self.keep_alive.is_zero() {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(sent) = self.ping_sent {
            if now - sent > self.keep_alive.max(self.timeout) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the broker did not answer PINGREQ",
                ));
            }
        } else if now - self.last_sent >= self.keep_alive / 2 {
            self.write_raw(&[0xC0, 0])?;
            self.ping_sent = Some(now);
        }
        Ok(())
    }

    /// Acknowledges a QoS 1 (PUBACK) or QoS 2 (PUBREC) message; appends to `out`.
    pub fn ack_into(out: &mut Vec<u8>, qos: Qos, pid: u16) {
        match qos {
            Qos::AtMostOnce => {}
            Qos::AtLeastOnce => out.extend_from_slice(&ack(0x40, pid)),
            Qos::ExactlyOnce => out.extend_from_slice(&ack(0x50, pid)),
        }
    }

    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        self.last_sent = Instant::now();
        Ok(())
    }

    fn send_packet(&mut self, packet: &Packet, size: usize) -> io::Result<()> {
        let mut buf = vec![0u8; size];
        let n = mqttrs::encode_slice(packet, &mut buf)
            .map_err(|e| proto(format!("cannot encode {:?}: {e:?}", packet.get_type())))?;
        self.write_raw(&buf[..n])
    }

    /// Sends DISCONNECT (the broker keeps a persistent session) and closes.
    pub fn disconnect(mut self) {
        let _ = self.write_raw(&[0xE0, 0]);
        self.stream.shutdown();
    }
}

fn ack(first: u8, pid: u16) -> [u8; 4] {
    let [hi, lo] = pid.to_be_bytes();
    [first, 2, hi, lo]
}

fn proto(msg: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("MQTT protocol error: {msg}"),
    )
}

/// The name of an MQTT 3.1.1 packet type, for error messages.
fn packet_name(typ: u8) -> &'static str {
    match typ {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        _ => "packet of a reserved type",
    }
}

/// Checks a whole packet's body against what its type needs before `mqttrs`
/// decodes it: `mqttrs` indexes without bounds checks, so a short packet from
/// a broken or hostile broker would trap the connector instead of costing
/// the connection. Packets only a client sends are refused too.
fn check_shape(first: u8, body: &[u8]) -> io::Result<()> {
    let typ = first >> 4;
    let name = packet_name(typ);
    let at_least = |need: usize| {
        if body.len() < need {
            Err(proto(format!(
                "a {name} of {} bytes, at least {need} expected",
                body.len()
            )))
        } else {
            Ok(())
        }
    };
    match typ {
        // CONNACK: flags and return code; PUBACK..PUBCOMP, UNSUBACK: packet id.
        2 | 4..=7 | 11 if body.len() != 2 => Err(proto(format!(
            "a {name} of {} bytes, 2 expected",
            body.len()
        ))),
        3 => {
            let qos = (first >> 1) & 3;
            if qos == 3 {
                return Err(proto("invalid QoS 3 in PUBLISH".into()));
            }
            at_least(2)?;
            let topic = u16::from_be_bytes([body[0], body[1]]) as usize;
            at_least(2 + topic + if qos > 0 { 2 } else { 0 })
        }
        // SUBACK: packet id and at least one return code.
        9 => at_least(3),
        1 | 8 | 10 => Err(proto(format!("a broker does not send {name}"))),
        0 | 15 => Err(proto(format!("reserved packet type {typ}"))),
        _ => Ok(()),
    }
}

/// Length of the fixed header and the remaining length, once both are read.
fn fixed_header(buf: &[u8]) -> io::Result<Option<(usize, usize)>> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((2 + i, len)));
        }
    }
    Err(proto("remaining length longer than 4 bytes".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_headers() {
        assert_eq!(fixed_header(&[0x30]).unwrap(), None);
        assert_eq!(fixed_header(&[0x30, 5]).unwrap(), Some((2, 5)));
        assert_eq!(fixed_header(&[0x30, 0x80, 0x01]).unwrap(), Some((3, 128)));
        assert_eq!(
            fixed_header(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).unwrap(),
            Some((5, 268_435_455))
        );
        assert!(fixed_header(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
    }

    /// Decodes one whole packet the way `Conn::parse` does.
    fn decode(packet: &[u8]) -> io::Result<()> {
        let (hlen, rem) = fixed_header(packet)?.expect("a whole header");
        assert_eq!(packet.len(), hlen + rem, "a whole packet");
        check_shape(packet[0], &packet[hlen..])?;
        mqttrs::decode_slice(packet)
            .map_err(|e| proto(format!("{e:?}")))?
            .expect("a whole packet");
        Ok(())
    }

    #[test]
    fn short_packets_are_errors_not_panics() {
        for bad in [
            &[0x20, 0][..],               // CONNACK without its two bytes
            &[0x20, 1, 0],                // CONNACK cut short
            &[0x40, 0],                   // PUBACK without packet id
            &[0x62, 1, 0],                // PUBREL cut short
            &[0x90, 1, 0],                // SUBACK cut short
            &[0x90, 2, 0, 1],             // SUBACK without return codes
            &[0x30, 1, 0],                // PUBLISH without a topic length
            &[0x30, 3, 0, 5, b'a'],       // PUBLISH topic longer than the packet
            &[0x32, 3, 0, 1, b'a'],       // QoS 1 PUBLISH without packet id
            &[0x34, 4, 0, 1, b'a', 0],    // QoS 2 PUBLISH with half a packet id
            &[0x36, 5, 0, 1, b'a', 0, 1], // QoS 3
            &[0x10, 2, 0, 4],             // CONNECT from a broker
            &[0x82, 2, 0, 1],             // SUBSCRIBE from a broker
            &[0x00, 0],                   // reserved type 0
            &[0xF0, 0],                   // reserved type 15
            &[0x30, 4, 0, 2, 0xC3, 0x28], // topic not UTF-8
            &[0x40, 2, 0, 0],             // packet id 0
        ] {
            assert!(decode(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            &[0x20, 2, 0, 0][..],
            &[0x40, 2, 0, 7],
            &[0x90, 3, 0, 1, 1],
            &[0x30, 3, 0, 1, b'a'],
            &[0x32, 6, 0, 1, b'a', 0, 9, b'x'],
            &[0xD0, 0],
        ] {
            decode(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }
}
