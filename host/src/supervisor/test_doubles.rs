//! In-memory stand-ins for the two things a pipeline talks to, for unit
//! tests on virtual time: a guest that answers calls from a script, and a
//! broker that delivers what a test produces and records what was published
//! and acknowledged.
//!
//! They exist so that the pipelines' own logic (batching, linger, replay
//! after a worker death, commit order, drain, in-flight bounds) can be
//! driven step by step under `tokio::time::pause`. The integration tests in
//! `host/tests/` run the same pipelines against worker processes and the
//! real broker (and testkit); these doubles replace neither.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use danube_client::{DanubeClient, SchemaRegistryClient};
use danube_core::message::{MessageID, StreamMessage};
use danube_core::proto::SchemaReference;
use tokio::sync::{mpsc, watch};

use super::danube::{Absent, Consume, Danube, DanubeFailure, Publish};
use super::retry::RetryPolicy;
use super::worker::{Guest, WorkerGone};
use crate::config::ConnectorConfig;
use crate::contract::{Call, CallOutcome, ConsumerConfig, ProducerConfig};
use crate::observability::Observability;

/// What a scripted guest does with a call.
pub enum Answer {
    Outcome(CallOutcome),
    /// The worker dies during the call: it fails, and so does every later one.
    Die,
}

type Script = Box<dyn FnMut(&Call) -> Answer + Send>;

/// A guest whose answers come from a script. Like a worker process, it takes
/// one call at a time (pipelined calls wait their turn), each taking
/// `latency`.
pub struct ScriptedGuest {
    script: Mutex<Script>,
    calls: Mutex<Vec<Call>>,
    turn: tokio::sync::Mutex<()>,
    latency: Duration,
    gone: watch::Sender<bool>,
    /// Calls made and not answered yet (waiting for their turn included),
    /// and the most at once.
    open_calls: Mutex<(usize, usize)>,
}

impl ScriptedGuest {
    pub fn new(script: impl FnMut(&Call) -> Answer + Send + 'static) -> ScriptedGuest {
        ScriptedGuest {
            script: Mutex::new(Box::new(script)),
            calls: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
            latency: Duration::ZERO,
            gone: watch::channel(false).0,
            open_calls: Mutex::new((0, 0)),
        }
    }

    /// The most calls that were made and not yet answered at one time.
    pub fn most_calls_at_once(&self) -> usize {
        lock(&self.open_calls).1
    }

    pub fn with_latency(mut self, latency: Duration) -> ScriptedGuest {
        self.latency = latency;
        self
    }

    /// The calls answered so far (the one it died in included), in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    async fn answer(&self, call: Call) -> Result<CallOutcome, WorkerGone> {
        let _turn = self.turn.lock().await;
        if *self.gone.borrow() {
            return Err(Self::died());
        }
        tokio::time::sleep(self.latency).await;
        let answer = (lock(&self.script))(&call);
        lock(&self.calls).push(call);
        match answer {
            Answer::Outcome(outcome) => Ok(outcome),
            Answer::Die => {
                self.gone.send_replace(true);
                Err(Self::died())
            }
        }
    }

    fn died() -> WorkerGone {
        WorkerGone::Exited("the scripted guest died".into())
    }
}

impl Guest for ScriptedGuest {
    async fn call(&self, _trace_id: u64, call: Call) -> Result<CallOutcome, WorkerGone> {
        {
            let mut open = lock(&self.open_calls);
            open.0 += 1;
            open.1 = open.1.max(open.0);
        }
        let answer = self.answer(call).await;
        lock(&self.open_calls).0 -= 1;
        answer
    }

    async fn exited(&self) -> WorkerGone {
        let _ = self.gone.subscribe().wait_for(|gone| *gone).await;
        Self::died()
    }

    async fn stop(self) {}
}

/// A broker in memory. Topics exist once created or produced to. Messages
/// produced to a topic go to its subscription's consumer (one per topic),
/// or wait for one: like a reliable subscription made before publishing.
#[derive(Clone)]
pub struct MemoryBroker {
    state: Arc<Mutex<BrokerState>>,
    /// Never used: no test record carries a schema. It exists because the
    /// pipelines ask for the registry's client at start; `build` does not
    /// connect.
    registry: DanubeClient,
}

#[derive(Default)]
struct BrokerState {
    topics: HashSet<String>,
    next_offset: HashMap<String, u64>,
    /// Produced and not yet handed to a consumer's stream.
    waiting: HashMap<String, Vec<StreamMessage>>,
    streams: HashMap<String, mpsc::Sender<StreamMessage>>,
    acked: Vec<(String, u64)>,
    published: HashMap<String, Vec<Bytes>>,
    /// Sends that fail (retryably) before the next one succeeds.
    failing_sends: u32,
    send_latency: Duration,
    /// Sends waiting for the broker's answer right now, and the most at once.
    sending: usize,
    most_sending: usize,
}

impl MemoryBroker {
    pub async fn new() -> MemoryBroker {
        let registry = DanubeClient::builder()
            .service_url("http://127.0.0.1:1")
            .build()
            .await
            .expect("a client that is never connected");
        MemoryBroker {
            state: Arc::default(),
            registry,
        }
    }

    fn state(&self) -> MutexGuard<'_, BrokerState> {
        lock(&self.state)
    }

    pub fn create_topic(&self, topic: &str) {
        self.state().topics.insert(topic.to_string());
    }

    /// Produces a message to `topic` with these attributes; returns its offset.
    pub fn produce(&self, topic: &str, payload: &[u8], attributes: &[(&str, &str)]) -> u64 {
        let mut state = self.state();
        state.topics.insert(topic.to_string());
        let offset = state.next_offset.entry(topic.to_string()).or_default();
        let message = StreamMessage {
            request_id: *offset,
            msg_id: MessageID {
                producer_id: 1,
                topic_name: topic.to_string(),
                broker_addr: "memory".into(),
                topic_offset: *offset,
            },
            payload: Bytes::copy_from_slice(payload),
            publish_time: 0,
            producer_name: "test".into(),
            subscription_name: None,
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            schema_id: None,
            schema_version: None,
            routing_key: None,
        };
        *offset += 1;
        let offset = message.msg_id.topic_offset;
        state
            .waiting
            .entry(topic.to_string())
            .or_default()
            .push(message);
        state.flush(topic);
        offset
    }

    /// Whether a consumer of `topic` has its message stream open.
    pub fn subscribed(&self, topic: &str) -> bool {
        self.state().streams.contains_key(topic)
    }

    /// The offsets of `topic` acknowledged so far, in acknowledgement order.
    pub fn acked(&self, topic: &str) -> Vec<u64> {
        let state = self.state();
        let acked = state.acked.iter().filter(|(t, _)| t == topic);
        acked.map(|(_, offset)| *offset).collect()
    }

    /// The payloads published to `topic`, in order.
    pub fn published(&self, topic: &str) -> Vec<Bytes> {
        self.state()
            .published
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// The next `count` sends fail with a retryable error.
    pub fn fail_sends(&self, count: u32) {
        self.state().failing_sends = count;
    }

    /// Every send takes this long before the broker answers.
    pub fn set_send_latency(&self, latency: Duration) {
        self.state().send_latency = latency;
    }

    /// The most sends that waited for the broker at the same time.
    pub fn most_sends_at_once(&self) -> usize {
        self.state().most_sending
    }
}

impl BrokerState {
    /// Hands what waits on `topic` to its consumer's stream, if it has one.
    fn flush(&mut self, topic: &str) {
        let Some(stream) = self.streams.get(topic) else {
            return;
        };
        for message in self.waiting.remove(topic).unwrap_or_default() {
            stream
                .try_send(message)
                .expect("a test produces no more than a stream holds");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Danube for MemoryBroker {
    type Producer = MemoryProducer;
    type Consumer = MemoryConsumer;

    async fn create_producer(
        &self,
        _name: &str,
        config: &ProducerConfig,
        _schema: Option<&SchemaReference>,
    ) -> Result<MemoryProducer, DanubeFailure> {
        self.create_topic(&config.topic);
        Ok(MemoryProducer {
            broker: self.clone(),
            topic: config.topic.clone(),
        })
    }

    async fn partitions(&self, topic: &str) -> Result<Vec<String>, DanubeFailure> {
        Ok(match self.state().topics.contains(topic) {
            true => vec![topic.to_string()],
            false => Vec::new(),
        })
    }

    async fn subscribe(
        &self,
        _consumer_name: &str,
        config: &ConsumerConfig,
    ) -> Result<MemoryConsumer, DanubeFailure> {
        if !self.state().topics.contains(&config.topic) {
            return Err(DanubeFailure {
                message: format!("Unable to find the topic {}", config.topic),
                retryable: false,
                code: Some(tonic::Code::NotFound),
                absent: Some(Absent::Topic),
            });
        }
        Ok(MemoryConsumer {
            broker: self.clone(),
            topic: config.topic.clone(),
        })
    }

    fn schema_registry(&self) -> SchemaRegistryClient {
        self.registry.schema()
    }
}

pub struct MemoryProducer {
    broker: MemoryBroker,
    topic: String,
}

impl Publish for MemoryProducer {
    async fn send(
        &self,
        payload: Vec<u8>,
        _attributes: HashMap<String, String>,
        _key: Option<&str>,
    ) -> Result<(), DanubeFailure> {
        let latency = {
            let mut state = self.broker.state();
            state.sending += 1;
            state.most_sending = state.most_sending.max(state.sending);
            state.send_latency
        };
        tokio::time::sleep(latency).await;
        let mut state = self.broker.state();
        state.sending -= 1;
        if state.failing_sends > 0 {
            state.failing_sends -= 1;
            return Err(DanubeFailure {
                message: "Unavailable: the broker is restarting".into(),
                retryable: true,
                code: Some(tonic::Code::Unavailable),
                absent: None,
            });
        }
        let published = state.published.entry(self.topic.clone()).or_default();
        published.push(Bytes::from(payload));
        Ok(())
    }
}

pub struct MemoryConsumer {
    broker: MemoryBroker,
    topic: String,
}

impl Consume for MemoryConsumer {
    async fn receive(&mut self) -> Result<mpsc::Receiver<StreamMessage>, DanubeFailure> {
        let (tx, rx) = mpsc::channel(4096);
        let mut state = self.broker.state();
        state.streams.insert(self.topic.clone(), tx);
        state.flush(&self.topic);
        Ok(rx)
    }

    async fn ack(&mut self, message: &StreamMessage) -> Result<(), DanubeFailure> {
        let acked = (self.topic.clone(), message.msg_id.topic_offset);
        self.broker.state().acked.push(acked);
        Ok(())
    }

    async fn close(&mut self) {
        self.broker.state().streams.remove(&self.topic);
    }
}

/// A connector configuration with `tables` (host tables, TOML) for a
/// pipeline under test; it lives as long as the test process.
pub fn test_config(tables: &str) -> &'static ConnectorConfig {
    let text =
        format!("danube_service_url = \"http://127.0.0.1:1\"\nconnector_name = \"t\"\n{tables}");
    let config = ConnectorConfig::parse(&text, std::path::Path::new("t.toml"), &|_| None)
        .expect("a valid test configuration");
    Box::leak(Box::new(config))
}

/// An exclusive subscription `s` to `topic`, as a sink under test opens.
pub fn test_consumer(topic: &str) -> ConsumerConfig {
    ConsumerConfig {
        topic: topic.into(),
        subscription: "s".into(),
        subscription_type: crate::contract::SubscriptionType::Exclusive,
        expected_schema_subject: None,
        decode_avro: false,
    }
}

/// The retry policy `config` asks for, counting into a fresh registry,
/// and that registry.
pub fn test_policy(config: &ConnectorConfig) -> (RetryPolicy, Observability) {
    let observability = Observability::new();
    let policy = RetryPolicy {
        config: config.host.retry.clone(),
        metrics: observability.connector("t"),
    };
    (policy, observability)
}

/// The value of counter `name` in the first of its series whose labels
/// hold `labels` (0 before it exists).
pub fn counted(observability: &Observability, name: &str, labels: &str) -> u64 {
    observability
        .render_metrics()
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits (on virtual time) until `done`, for at most a virtual minute.
pub async fn until(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached within a minute"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
