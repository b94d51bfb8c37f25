//! `mqtt-source`: subscribes to an MQTT 3.1.1 broker and hands what arrives
//! to the host, which publishes it to Danube.
//!
//! Every message gets a position in one offset stream. QoS 1 and 2 messages
//! are acknowledged to the MQTT broker (PUBACK, PUBREC) only in `commit`,
//! once the host reports that Danube stored them and everything before them;
//! with a persistent session the broker redelivers whatever was not
//! acknowledged when the connector stopped or lost its connection. See
//! README.md.

mod config;
mod session;
mod topic;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use danube_connect_sdk::{
    ConnectorError, ConnectorInfo, Offset, ProducerConfig, Source, SourceRecord, error, info,
    metrics, state, warn,
};
use serde::{Deserialize, Serialize};

pub use config::{CONFIG_EXAMPLE, Config, Qos, RoutingKey, Settings};
use session::{Conn, ConnectError, Event, Message};

/// Name of the offset stream this source reports.
const STREAM: &str = "mqtt";
/// State-store key: incremented at every start, the high bits of positions.
const GENERATION_KEY: &str = "generation";
/// State-store key: the subscriptions the broker's session is known to hold.
const SUBSCRIBED_KEY: &str = "subscribed";
/// Positions are `generation << GENERATION_SHIFT | sequence`, so that offsets
/// from an earlier instance never acknowledge a message of this one.
const GENERATION_SHIFT: u32 = 40;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A received QoS 1/2 message awaiting its acknowledgement.
struct Unacked {
    position: u64,
    qos: Qos,
    pid: u16,
}

/// What the broker's session is known to be subscribed to.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Subscribed {
    broker: String,
    client_id: String,
    filters: Vec<(String, u8)>,
}

pub struct MqttSource {
    s: Settings,
    conn: Option<Conn>,
    /// Unacknowledged messages of the current connection, by position.
    unacked: VecDeque<Unacked>,
    generation: u64,
    next_seq: u64,
    backoff: Duration,
    next_attempt: Instant,
    last_error: Option<String>,
    subscribed: Option<Subscribed>,
    dropped_logged: u64,
}

impl MqttSource {
    fn broker(&self) -> String {
        format!("{}:{}", self.s.host, self.s.port)
    }

    fn wanted(&self) -> Subscribed {
        Subscribed {
            broker: self.broker(),
            client_id: self.s.client_id.clone(),
            filters: self
                .s
                .routes
                .iter()
                .map(|r| (r.filter.clone(), r.qos.level()))
                .collect(),
        }
    }

    /// One connection attempt: CONNECT, then SUBSCRIBE unless the broker's
    /// session already holds exactly these subscriptions.
    fn try_connect(&mut self) -> Result<(), ConnectError> {
        let (mut conn, session_present) = Conn::connect(&self.s)?;
        let wanted = self.wanted();
        if session_present && self.subscribed.as_ref() == Some(&wanted) {
            info!(
                "connected to MQTT broker {} (session resumed)",
                self.broker()
            );
        } else {
            let filters: Vec<(String, Qos)> = self
                .s
                .routes
                .iter()
                .map(|r| (r.filter.clone(), r.qos))
                .collect();
            let granted = conn.subscribe(&filters)?;
            for ((filter, qos), granted) in filters.iter().zip(&granted) {
                match granted {
                    None => {
                        return Err(ConnectError::SubscribeRefused(format!(
                            "the broker refused the subscription to {filter:?} (check its ACL)"
                        )));
                    }
                    Some(g) if *g < qos.level() => warn!(
                        "the broker granted QoS {g} for {filter:?} instead of {}: messages on it are not redelivered if lost",
                        qos.level()
                    ),
                    _ => {}
                }
            }
            if !self.s.clean_session {
                if let Err(e) = state::put_json(SUBSCRIBED_KEY, &wanted) {
                    warn!("cannot remember the subscriptions: {}", e.message());
                }
                self.subscribed = Some(wanted);
            }
            info!(
                "connected to MQTT broker {} (session {}), subscribed to {}",
                self.broker(),
                if session_present { "resumed" } else { "new" },
                filters
                    .iter()
                    .map(|(f, _)| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.conn = Some(conn);
        self.backoff = BACKOFF_START;
        self.last_error = None;
        metrics::gauge_set("mqtt_connected", 1.0, &[]);
        Ok(())
    }

    /// Connects if disconnected and the backoff allows it.
    fn ensure_connected(&mut self) {
        if self.conn.is_some() || Instant::now() < self.next_attempt {
            return;
        }
        if let Err(e) = self.try_connect() {
            let msg = e.to_string();
            warn!(
                "MQTT broker {}: {msg}; retrying in {:?}",
                self.broker(),
                self.backoff
            );
            self.last_error = Some(msg);
            self.next_attempt = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            metrics::counter_add("mqtt_connect_failures_total", 1, &[]);
        }
    }

    /// Drops the connection. Unacknowledged messages are forgotten here: the
    /// broker redelivers them on the next connection (persistent session).
    fn lose_connection(&mut self, why: String) {
        warn!(
            "lost the MQTT connection to {}: {why}; {} unacknowledged messages will be redelivered by the broker",
            self.broker(),
            self.unacked.len()
        );
        self.conn = None;
        self.unacked.clear();
        self.last_error = Some(why);
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        metrics::gauge_set("mqtt_connected", 0.0, &[]);
        metrics::counter_add("mqtt_reconnects_total", 1, &[]);
    }

    /// Turns an event into a record (or acknowledges what can never become one).
    fn handle(&mut self, event: Event, out: &mut Vec<SourceRecord>, acks: &mut Vec<u8>) {
        match event {
            Event::Publish(m) => {
                if let Some(record) = self.record(m, acks) {
                    out.push(record);
                }
            }
            Event::Oversized {
                topic,
                qos,
                pid,
                size,
            } => {
                self.drop_message(
                    &format!(
                        "a {size}-byte message on {topic:?} exceeds max_packet_size ({})",
                        self.s.max_packet_size
                    ),
                    "oversized",
                    qos,
                    pid,
                    acks,
                );
            }
            _ => {}
        }
    }

    fn record(&mut self, m: Message, acks: &mut Vec<u8>) -> Option<SourceRecord> {
        let Some(route) = self.s.route_for(&m.topic) else {
            self.drop_message(
                &format!(
                    "message on {:?} matches no route (an old subscription of this session?)",
                    m.topic
                ),
                "no_route",
                m.qos,
                m.pid,
                acks,
            );
            return None;
        };
        let position = (self.generation << GENERATION_SHIFT) | self.next_seq;
        self.next_seq += 1;
        let mut record =
            SourceRecord::from_bytes(route.topic.clone(), self.s.payload_format.encode(m.payload))
                .with_offset(STREAM, position);
        if route.routing_key == RoutingKey::Topic {
            record = record.with_key(m.topic.clone());
        }
        if self.s.include_metadata {
            record = record
                .with_attribute("mqtt.topic", m.topic)
                .with_attribute("mqtt.qos", m.qos.level().to_string())
                .with_attribute("mqtt.retain", m.retain.to_string())
                .with_attribute("mqtt.dup", m.dup.to_string());
        }
        if let Some(pid) = m.pid {
            self.unacked.push_back(Unacked {
                position,
                qos: m.qos,
                pid,
            });
        }
        Some(record)
    }

    /// A message that can never be published: log it (not too often), count
    /// it and acknowledge it so that the broker does not redeliver it forever.
    fn drop_message(
        &mut self,
        why: &str,
        reason: &str,
        qos: Qos,
        pid: Option<u16>,
        acks: &mut Vec<u8>,
    ) {
        if self.dropped_logged < 10 || self.dropped_logged.is_power_of_two() {
            error!("dropping an MQTT message: {why}");
        }
        self.dropped_logged += 1;
        metrics::counter_add("mqtt_messages_dropped_total", 1, &[("reason", reason)]);
        if let Some(pid) = pid {
            Conn::ack_into(acks, qos, pid);
        }
    }

    fn flush_acks(&mut self, acks: &[u8]) {
        if acks.is_empty() {
            return;
        }
        if let Some(conn) = &mut self.conn
            && let Err(e) = conn.write_raw(acks)
        {
            self.lose_connection(format!("cannot send acknowledgements: {e}"));
        }
    }
}

impl Source for MqttSource {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Subscribes to an MQTT 3.1.1 broker and publishes each message to the Danube topic of the \
             first matching route; QoS 1/2 messages are acknowledged upstream only after Danube stored them.",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ProducerConfig>), ConnectorError> {
        let s = config.into_settings()?;
        let producers = s.producers();
        let generation = state::get_json::<u64>(GENERATION_KEY)?.unwrap_or(0) + 1;
        if generation >= 1 << (64 - GENERATION_SHIFT) {
            return Err(ConnectorError::fatal(
                "the generation counter in the state store is exhausted",
            ));
        }
        state::put_json(GENERATION_KEY, &generation)?;
        let subscribed = if s.clean_session {
            None
        } else {
            state::get_json::<Subscribed>(SUBSCRIBED_KEY).ok().flatten()
        };
        let mut source = MqttSource {
            s,
            conn: None,
            unacked: VecDeque::new(),
            generation,
            next_seq: 0,
            backoff: BACKOFF_START,
            next_attempt: Instant::now(),
            last_error: None,
            subscribed,
            dropped_logged: 0,
        };
        // A first attempt now, so that a refusal that only the operator can
        // fix stops the connector at start. A broker that is merely not up
        // yet is retried from `poll`.
        match source.try_connect() {
            Ok(()) => {}
            Err(ConnectError::Refused(code)) => {
                return Err(ConnectorError::config(format!(
                    "MQTT broker {}: {}",
                    source.broker(),
                    ConnectError::Refused(code)
                )));
            }
            Err(ConnectError::SubscribeRefused(why)) => return Err(ConnectorError::config(why)),
            Err(e @ ConnectError::Tls(_)) => {
                return Err(ConnectorError::config(format!(
                    "MQTT broker {}: {e} (check ca_file and tls_server_name)",
                    source.broker()
                )));
            }
            Err(e) => {
                warn!(
                    "MQTT broker {} not reachable yet: {e}; retrying in the background",
                    source.broker()
                );
                source.last_error = Some(e.to_string());
                source.next_attempt = Instant::now() + source.backoff;
                metrics::gauge_set("mqtt_connected", 0.0, &[]);
            }
        }
        Ok((source, producers))
    }

    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<SourceRecord>, ConnectorError> {
        let deadline = Instant::now() + timeout;
        self.ensure_connected();
        let mut out = Vec::new();
        let mut acks = Vec::new();
        if self.conn.is_none() {
            // Wait out this poll (or until the next attempt) and report nothing.
            let now = Instant::now();
            let until = deadline.min(self.next_attempt.max(now));
            std::thread::sleep(until.saturating_duration_since(now));
            return Ok(out);
        }
        while let Some(event) = self.conn.as_mut().and_then(|c| c.early.pop_front()) {
            self.handle(event, &mut out, &mut acks);
        }
        let max = max.max(1);
        let failure = loop {
            let Some(conn) = self.conn.as_mut() else {
                break None;
            };
            let event = match conn.parse() {
                Ok(e) => e,
                Err(e) => break Some(e.to_string()),
            };
            if let Some(event) = event {
                self.handle(event, &mut out, &mut acks);
                if out.len() >= max {
                    break None;
                }
                continue;
            }
            // Nothing parsed: read more. Once records are at hand, only take
            // what is already there.
            if let Err(e) = conn.keep_alive() {
                break Some(e.to_string());
            }
            if !out.is_empty() {
                match conn.fill(Duration::ZERO) {
                    Ok(true) => continue,
                    Ok(false) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            if let Err(e) = conn.fill(deadline - now) {
                break Some(e.to_string());
            }
        };
        self.flush_acks(&acks);
        if let Some(why) = failure {
            self.lose_connection(why);
        }
        if !out.is_empty() {
            metrics::counter_add("mqtt_messages_received_total", out.len() as u64, &[]);
        }
        metrics::gauge_set("mqtt_unacked_messages", self.unacked.len() as f64, &[]);
        Ok(out)
    }

    fn commit(&mut self, offsets: Vec<Offset>) -> Result<(), ConnectorError> {
        let mut acks = Vec::new();
        for offset in offsets.iter().filter(|o| o.stream == STREAM) {
            while self
                .unacked
                .front()
                .is_some_and(|u| u.position <= offset.position)
            {
                let u = self.unacked.pop_front().expect("checked");
                Conn::ack_into(&mut acks, u.qos, u.pid);
            }
        }
        self.flush_acks(&acks);
        if let Some(conn) = self.conn.as_mut()
            && let Err(e) = conn.keep_alive()
        {
            self.lose_connection(e.to_string());
        }
        Ok(())
    }

    fn health(&mut self) -> Result<(), String> {
        match (&self.conn, &self.last_error) {
            (Some(_), _) => Ok(()),
            (None, Some(e)) => Err(format!(
                "not connected to MQTT broker {}: {e}",
                self.broker()
            )),
            (None, None) => Err(format!("not connected to MQTT broker {}", self.broker())),
        }
    }

    fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !self.unacked.is_empty() {
                info!(
                    "closing with {} unacknowledged messages; the broker redelivers them",
                    self.unacked.len()
                );
            }
            conn.disconnect();
        }
    }
}

danube_connect_sdk::export_source!(MqttSource);
