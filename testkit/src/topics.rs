//! Topic storage, subscriptions and dispatch.
//!
//! Everything here is a plain state machine: no I/O and no `async`. The gRPC
//! services call into it under one lock, so every change (publish, ack,
//! disconnect, timeout) is applied and dispatched atomically, and the
//! inspection API in `lib.rs` always sees a consistent picture.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use danube_core::proto::{self, consumer_request::SubscriptionType};
use tokio::sync::mpsc;
use tonic::Status;

/// What a consumer stream carries: the items of the `ReceiveMessages` response.
pub(crate) type Delivery = Result<proto::StreamMessage, Status>;

/// A message as stored on a topic, for inspection by tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Position in the topic: 0-based, per topic, increasing by one per message.
    pub offset: u64,
    pub payload: Vec<u8>,
    pub attributes: HashMap<String, String>,
    pub routing_key: Option<String>,
    pub producer_name: String,
    /// The broker-assigned id of the producer that sent the message.
    pub producer_id: u64,
    /// Milliseconds since the Unix epoch, as stamped by the producer.
    pub publish_time: u64,
    pub schema_id: Option<u64>,
    pub schema_version: Option<u32>,
}

/// A snapshot of one subscription's progress, for assertions in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionStats {
    /// The next offset never dispatched to this subscription.
    pub cursor: u64,
    /// Messages acknowledged (on reliable topics each offset counts once).
    pub acked: u64,
    /// Messages delivered and awaiting an ack (reliable topics only).
    pub unacked: usize,
    /// Consumers with an open message stream.
    pub consumers: usize,
    /// Deliveries made, redeliveries included.
    pub delivered: u64,
    /// Messages waiting to be delivered again (after a disconnect, an ack
    /// timeout or a nack whose delay has passed).
    pub redelivery_pending: usize,
}

/// The limits that shape dispatch, taken from `BrokerConfig`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_unacked_messages: usize,
    pub ack_timeout: Duration,
    pub max_payload_bytes: usize,
}

/// All topics, producers and consumers of the broker.
#[derive(Debug)]
pub(crate) struct Topics {
    limits: Limits,
    /// The URL put in `msg_id.broker_addr` of delivered messages.
    broker_url: String,
    /// Topics can only be created in these.
    namespaces: BTreeSet<String>,
    topics: BTreeMap<String, Topic>,
    producers: HashMap<u64, ProducerInfo>,
    /// Consumer id -> (topic, subscription) where the consumer lives.
    consumers: HashMap<u64, (String, String)>,
    /// One counter for producer ids, consumer ids and stream epochs: ids are
    /// unique across kinds, which makes mixed-up ids fail loudly.
    next_id: u64,
    timer: TimerHint,
}

/// What the timer task needs to know: when it plans to wake next, and
/// whether an earlier deadline appeared since.
#[derive(Debug, Default)]
struct TimerHint {
    armed: Option<Instant>,
    wake: bool,
}

impl TimerHint {
    fn note(&mut self, deadline: Instant) {
        if self.armed.is_none_or(|armed| deadline < armed) {
            self.armed = Some(deadline);
            self.wake = true;
        }
    }
}

#[derive(Debug)]
struct ProducerInfo {
    topic: String,
    name: String,
}

#[derive(Debug)]
pub(crate) struct Topic {
    reliable: bool,
    records: Vec<Record>,
    subscriptions: BTreeMap<String, Subscription>,
    /// The schema subject bound to the topic by its first producer that named one.
    schema_subject: Option<String>,
}

#[derive(Debug)]
struct Record {
    message: StoredMessage,
    /// The producer's request id, passed on to consumers as the real broker does.
    request_id: u64,
}

#[derive(Debug)]
struct Subscription {
    kind: SubscriptionType,
    cursor: u64,
    /// Offsets to deliver again before anything past the cursor.
    redeliver: BTreeSet<u64>,
    in_flight: BTreeMap<u64, InFlight>,
    /// Nacked offsets and when they become due for redelivery.
    delayed: BTreeMap<u64, Instant>,
    acked: u64,
    delivered: u64,
    /// Keyed by id; ids grow, so iteration order is registration order,
    /// which decides the active consumer of Exclusive and FailOver subscriptions.
    consumers: BTreeMap<u64, Consumer>,
    round_robin: usize,
}

#[derive(Debug)]
struct InFlight {
    consumer: u64,
    deadline: Instant,
}

#[derive(Debug)]
struct Consumer {
    name: String,
    key_filters: Vec<String>,
    /// True from subscribe until its stream ends; an Exclusive subscription
    /// refuses other consumers while one is connected.
    connected: bool,
    stream: Option<Attachment>,
}

#[derive(Debug)]
struct Attachment {
    epoch: u64,
    tx: mpsc::UnboundedSender<Delivery>,
}

/// Everything a subscription needs from its topic to dispatch.
struct Ctx<'a> {
    topic: &'a str,
    records: &'a [Record],
    reliable: bool,
    limits: Limits,
    broker_url: &'a str,
    now: Instant,
}

/// The namespaces a fresh real broker has.
const INITIAL_NAMESPACES: [&str; 2] = ["default", "system"];

/// A namespace name, or one part of a topic name: letters, digits, `_`, `-`.
fn is_name(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// Checks the real broker's topic format: `/namespace/name`, each part made
/// of letters, digits, `_` and `-`.
pub(crate) fn validate_topic_name(name: &str) -> Result<(), Status> {
    let mut parts = name.split('/');
    let valid = parts.next() == Some("") && parts.clone().count() == 2 && parts.all(is_name);
    if valid {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "The topic: {name} has an invalid format, should be: /namespace_name/topic_name"
        )))
    }
}

impl Topics {
    pub(crate) fn new(limits: Limits, broker_url: String) -> Self {
        Topics {
            limits,
            broker_url,
            namespaces: INITIAL_NAMESPACES.map(str::to_owned).into(),
            topics: BTreeMap::new(),
            producers: HashMap::new(),
            consumers: HashMap::new(),
            next_id: 1,
            timer: TimerHint::default(),
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Returns whether the timer task must recompute its deadline, and clears the flag.
    pub(crate) fn take_timer_wake(&mut self) -> bool {
        std::mem::take(&mut self.timer.wake)
    }

    /// Answers a lookup: the topic, or the partitions of a partitioned topic, must exist.
    pub(crate) fn lookup(&self, topic: &str) -> Result<(), Status> {
        validate_topic_name(topic)?;
        if self.partitions(topic)?.is_empty() {
            return Err(Status::not_found(format!(
                "Unable to find the requested topic: {topic}"
            )));
        }
        Ok(())
    }

    /// The topic itself if it exists, else its `<topic>-part-<i>` partitions
    /// in index order; empty when neither exists, as in the real broker.
    pub(crate) fn partitions(&self, topic: &str) -> Result<Vec<String>, Status> {
        validate_topic_name(topic)?;
        if self.topics.contains_key(topic) {
            return Ok(vec![topic.to_owned()]);
        }
        let prefix = format!("{topic}-part-");
        let mut parts: Vec<(u64, &String)> = self
            .topics
            .keys()
            .filter_map(|name| {
                let index = name.strip_prefix(&prefix)?.parse().ok()?;
                Some((index, name))
            })
            .collect();
        parts.sort();
        Ok(parts.into_iter().map(|(_, name)| name.clone()).collect())
    }

    /// Adds a namespace, answering as the real broker's `CreateNamespace`.
    pub(crate) fn create_namespace(&mut self, name: &str) -> Result<(), Status> {
        if !is_name(name) {
            return Err(Status::invalid_argument(format!(
                "The namespace name '{name}' is invalid: use letters, digits, '_' and '-'"
            )));
        }
        if !self.namespaces.insert(name.to_owned()) {
            return Err(Status::not_found(format!(
                "Unable to create the namespace {name} due to Namespace {name} already exists."
            )));
        }
        Ok(())
    }

    pub(crate) fn namespaces(&self) -> Vec<String> {
        self.namespaces.iter().cloned().collect()
    }

    /// Creates topics as the admin API's `CreateTopic` and
    /// `CreatePartitionedTopic` do: in order, stopping at the first failure
    /// (the topics created before it stay), which is reported wrapped in
    /// `NotFound` as the real broker does.
    pub(crate) fn create_topics(&mut self, names: &[String], reliable: bool) -> Result<(), Status> {
        names.iter().try_for_each(|name| {
            self.create_topic(name, reliable)
                .map(drop)
                .map_err(|status| {
                    Status::not_found(format!("Unable to create the topic {name} due to {status}"))
                })
        })
    }

    /// Creates a new topic with the checks of the real broker, in its order:
    /// the name's format, the namespace, the name being free, and no plain
    /// topic beside partitions of the same base name (or the reverse).
    fn create_topic(&mut self, name: &str, reliable: bool) -> Result<&mut Topic, Status> {
        validate_topic_name(name)?;
        let namespace = name.split('/').nth(1).unwrap_or_default();
        if !self.namespaces.contains(namespace) {
            return Err(Status::unavailable(format!(
                "Unable to find the namespace {namespace}, the topic can be created only for an exisiting namespace"
            )));
        }
        if self.topics.contains_key(name) {
            return Err(Status::already_exists(format!(
                "Topic '{name}' already exists"
            )));
        }
        // As in the real broker, any name containing "-part-" is a partition.
        if let Some((base, _)) = name.rsplit_once("-part-") {
            if self.topics.contains_key(base) {
                return Err(Status::already_exists(format!(
                    "Cannot create partitioned topic '{name}': a non-partitioned topic '{base}' already exists. Delete the non-partitioned topic first."
                )));
            }
        } else {
            let partitions = self.partitions(name)?.len();
            if partitions > 0 {
                return Err(Status::already_exists(format!(
                    "Cannot create topic '{name}': partitioned topics with this base name already exist (found {partitions} partitions). Delete the partitioned topics first."
                )));
            }
        }
        Ok(self.topics.entry(name.to_owned()).or_insert(Topic {
            reliable,
            records: Vec::new(),
            subscriptions: BTreeMap::new(),
            schema_subject: None,
        }))
    }

    /// The topic a producer publishes to: an existing one must have the
    /// producer's dispatch strategy; a missing one is created.
    fn producer_topic(&mut self, name: &str, reliable: bool) -> Result<&mut Topic, Status> {
        if !self.topics.contains_key(name) {
            return self.create_topic(name, reliable);
        }
        let topic = self
            .topics
            .get_mut(name)
            .ok_or_else(|| Status::internal(format!("The topic {name} vanished")))?;
        if topic.reliable != reliable {
            return Err(Status::failed_precondition(
                "Producer requested dispatch strategy does not match topic strategy",
            ));
        }
        Ok(topic)
    }

    /// Registers a producer, creating the topic on first use. A producer
    /// reconnecting with the same name on the same topic gets its old id back.
    pub(crate) fn create_producer(
        &mut self,
        request: &proto::ProducerRequest,
        schema_registered: bool,
    ) -> Result<u64, Status> {
        let topic_name = &request.topic_name;
        validate_topic_name(topic_name)?;
        if request.producer_name.is_empty() {
            return Err(Status::invalid_argument(
                "The producer name must not be empty",
            ));
        }
        let reliable = match proto::DispatchStrategy::try_from(request.dispatch_strategy) {
            Ok(proto::DispatchStrategy::Reliable) => true,
            Ok(proto::DispatchStrategy::NonReliable) => false,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "Unknown dispatch strategy {}",
                    request.dispatch_strategy
                )));
            }
        };
        let subject = request.schema_ref.as_ref().map(|r| r.subject.as_str());
        if let Some(subject) = subject
            && !schema_registered
        {
            return Err(Status::failed_precondition(format!(
                "Schema subject '{subject}' is not registered. Ensure schema is registered first."
            )));
        }

        let topic = self.producer_topic(topic_name, reliable)?;
        if let Some(subject) = subject {
            match &topic.schema_subject {
                Some(existing) if existing != subject => {
                    return Err(Status::failed_precondition(format!(
                        "Topic '{topic_name}' uses schema subject '{existing}', cannot use '{subject}'"
                    )));
                }
                Some(_) => {}
                None => topic.schema_subject = Some(subject.to_owned()),
            }
        }

        let existing = self
            .producers
            .iter()
            .find(|(_, p)| p.topic == *topic_name && p.name == request.producer_name);
        if let Some((&id, _)) = existing {
            return Ok(id);
        }
        let id = self.fresh_id();
        self.producers.insert(
            id,
            ProducerInfo {
                topic: topic_name.clone(),
                name: request.producer_name.clone(),
            },
        );
        Ok(id)
    }

    /// Appends a message to its producer's topic and dispatches it.
    pub(crate) fn publish(&mut self, message: proto::StreamMessage) -> Result<u64, Status> {
        let msg_id = message
            .msg_id
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("The message has no msg_id"))?;
        let producer = self.producers.get(&msg_id.producer_id).ok_or_else(|| {
            Status::not_found(format!(
                "The producer with id {} does not exist",
                msg_id.producer_id
            ))
        })?;
        if !msg_id.topic_name.is_empty() && msg_id.topic_name != producer.topic {
            return Err(Status::invalid_argument(format!(
                "The producer with id {} publishes to {}, not to {}",
                msg_id.producer_id, producer.topic, msg_id.topic_name
            )));
        }
        let max = self.limits.max_payload_bytes;
        if message.payload.len() > max {
            return Err(Status::invalid_argument(format!(
                "The message payload of {} bytes exceeds the broker limit of {max} bytes",
                message.payload.len()
            )));
        }
        let producer_id = msg_id.producer_id;
        let topic_name = producer.topic.clone();
        let topic = self
            .topics
            .get_mut(&topic_name)
            .ok_or_else(|| Status::internal(format!("The topic {topic_name} vanished")))?;
        let offset = topic.records.len() as u64;
        topic.records.push(Record {
            request_id: message.request_id,
            message: StoredMessage {
                offset,
                payload: message.payload.to_vec(),
                attributes: message.attributes,
                routing_key: message.routing_key,
                producer_name: message.producer_name,
                producer_id,
                publish_time: message.publish_time,
                schema_id: message.schema_id,
                schema_version: message.schema_version,
            },
        });
        self.dispatch(&topic_name);
        Ok(offset)
    }

    /// Registers a consumer on a subscription, creating the subscription at
    /// the topic's end. A consumer subscribing again under the same name keeps
    /// its id and the subscription's cursor; its old stream is ended.
    pub(crate) fn subscribe(&mut self, request: &proto::ConsumerRequest) -> Result<u64, Status> {
        let topic_name = &request.topic_name;
        validate_topic_name(topic_name)?;
        if request.subscription.is_empty() || request.consumer_name.is_empty() {
            return Err(Status::invalid_argument(
                "The subscription and consumer names must not be empty",
            ));
        }
        let kind = SubscriptionType::try_from(request.subscription_type).map_err(|_| {
            Status::invalid_argument(format!(
                "Unknown subscription type {}",
                request.subscription_type
            ))
        })?;
        // Peeked, not taken: `self` stays borrowed through the subscription
        // below, and the id is only consumed if a consumer is registered.
        let id = self.next_id;
        let topic = self
            .topics
            .get_mut(topic_name)
            .ok_or_else(|| Status::not_found(format!("Unable to find the topic: {topic_name}")))?;
        let end = topic.records.len() as u64;
        let subscription = topic
            .subscriptions
            .entry(request.subscription.clone())
            .or_insert_with(|| Subscription::new(kind, end));
        if subscription.kind != kind {
            return Err(Status::failed_precondition(format!(
                "The subscription {} is {}, not {}",
                request.subscription,
                subscription.kind.as_str_name(),
                kind.as_str_name()
            )));
        }

        let known = subscription
            .consumers
            .iter()
            .find(|(_, c)| c.name == request.consumer_name)
            .map(|(&id, _)| id);
        if let Some(known) = known {
            subscription.release(known);
            if let Some(consumer) = subscription.consumers.get_mut(&known) {
                consumer.connected = true;
                consumer.key_filters = request.key_filters.clone();
            }
            self.dispatch(topic_name);
            return Ok(known);
        }

        if kind == SubscriptionType::Exclusive
            && subscription.consumers.values().any(|c| c.connected)
        {
            return Err(Status::permission_denied(format!(
                "The exclusive subscription {} on {topic_name} already has a consumer",
                request.subscription
            )));
        }
        subscription.consumers.insert(
            id,
            Consumer {
                name: request.consumer_name.clone(),
                key_filters: request.key_filters.clone(),
                connected: true,
                stream: None,
            },
        );
        self.next_id += 1;
        self.consumers
            .insert(id, (topic_name.clone(), request.subscription.clone()));
        Ok(id)
    }

    /// Opens the message stream of a consumer, replacing any older one (whose
    /// unacked messages are then redelivered).
    pub(crate) fn attach(
        &mut self,
        consumer_id: u64,
    ) -> Result<(u64, mpsc::UnboundedReceiver<Delivery>), Status> {
        let (topic_name, subscription) = self.consumer_location(consumer_id)?;
        let epoch = self.fresh_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let subscription = self.subscription_mut(&topic_name, &subscription)?;
        subscription.release(consumer_id);
        let consumer = subscription
            .consumers
            .get_mut(&consumer_id)
            .ok_or_else(|| Status::internal(format!("The consumer {consumer_id} vanished")))?;
        consumer.connected = true;
        consumer.stream = Some(Attachment { epoch, tx });
        self.dispatch(&topic_name);
        Ok((epoch, rx))
    }

    /// Called when a consumer's stream ends: if it is still the current
    /// stream, the consumer is disconnected and its unacked messages go to
    /// the other consumers.
    pub(crate) fn detach(&mut self, consumer_id: u64, epoch: u64) {
        let Ok((topic_name, subscription)) = self.consumer_location(consumer_id) else {
            return;
        };
        let Ok(subscription) = self.subscription_mut(&topic_name, &subscription) else {
            return;
        };
        let current = subscription
            .consumers
            .get(&consumer_id)
            .and_then(|c| c.stream.as_ref())
            .is_some_and(|s| s.epoch == epoch);
        if current {
            subscription.release(consumer_id);
            if let Some(consumer) = subscription.consumers.get_mut(&consumer_id) {
                consumer.connected = false;
            }
            self.dispatch(&topic_name);
        }
    }

    pub(crate) fn ack(&mut self, request: &proto::AckRequest) -> Result<(), Status> {
        let (topic_name, offset) =
            self.locate(request.msg_id.as_ref(), &request.subscription_name)?;
        let reliable = self.topics.get(&topic_name).is_some_and(|t| t.reliable);
        let subscription = self.subscription_mut(&topic_name, &request.subscription_name)?;
        if reliable {
            let outstanding = subscription.in_flight.remove(&offset).is_some()
                | subscription.redeliver.remove(&offset)
                | subscription.delayed.remove(&offset).is_some();
            if outstanding {
                subscription.acked += 1;
                self.dispatch(&topic_name);
            }
        } else {
            subscription.acked += 1;
        }
        Ok(())
    }

    /// Takes a message back from its consumer and redelivers it once `delay`
    /// has passed. Non-reliable topics keep nothing to redeliver.
    pub(crate) fn nack(
        &mut self,
        request: &proto::NackRequest,
        now: Instant,
    ) -> Result<(), Status> {
        let (topic_name, offset) =
            self.locate(request.msg_id.as_ref(), &request.subscription_name)?;
        let delay = Duration::from_millis(request.delay_ms.unwrap_or(0));
        let subscription = self.subscription_mut(&topic_name, &request.subscription_name)?;
        if subscription.in_flight.remove(&offset).is_none() {
            return Ok(());
        }
        if delay.is_zero() {
            subscription.redeliver.insert(offset);
        } else {
            let due = now + delay;
            subscription.delayed.insert(offset, due);
            self.timer.note(due);
        }
        self.dispatch(&topic_name);
        Ok(())
    }

    /// Moves timed-out deliveries and due nacks back to redelivery, dispatches
    /// them, and returns the next instant something falls due.
    pub(crate) fn expire(&mut self, now: Instant) -> Option<Instant> {
        let mut touched = Vec::new();
        let mut next: Option<Instant> = None;
        for (name, topic) in &mut self.topics {
            for subscription in topic.subscriptions.values_mut() {
                let timed_out: Vec<u64> = subscription
                    .in_flight
                    .iter()
                    .filter(|(_, f)| f.deadline <= now)
                    .map(|(&offset, _)| offset)
                    .collect();
                let due: Vec<u64> = subscription
                    .delayed
                    .iter()
                    .filter(|&(_, &at)| at <= now)
                    .map(|(&offset, _)| offset)
                    .collect();
                if !timed_out.is_empty() || !due.is_empty() {
                    touched.push(name.clone());
                }
                for offset in timed_out {
                    subscription.in_flight.remove(&offset);
                    subscription.redeliver.insert(offset);
                }
                for offset in due {
                    subscription.delayed.remove(&offset);
                    subscription.redeliver.insert(offset);
                }
            }
        }
        for name in touched {
            self.dispatch(&name);
        }
        for subscription in self.topics.values().flat_map(|t| t.subscriptions.values()) {
            let deadlines = subscription.in_flight.values().map(|f| f.deadline);
            let earliest = deadlines
                .chain(subscription.delayed.values().copied())
                .min();
            next = match (next, earliest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.timer = TimerHint {
            armed: next,
            wake: false,
        };
        next
    }

    pub(crate) fn producer_exists(&self, id: u64) -> bool {
        self.producers.contains_key(&id)
    }

    pub(crate) fn consumer_exists(&self, id: u64) -> bool {
        self.consumers.contains_key(&id)
    }

    pub(crate) fn topic_names(&self) -> Vec<String> {
        self.topics.keys().cloned().collect()
    }

    pub(crate) fn messages(&self, topic: &str) -> Vec<StoredMessage> {
        self.topics.get(topic).map_or_else(Vec::new, |t| {
            t.records.iter().map(|r| r.message.clone()).collect()
        })
    }

    /// The subscriptions of a topic, by name; none for an unknown topic.
    pub(crate) fn subscription_names(&self, topic: &str) -> Vec<String> {
        self.topics
            .get(topic)
            .map_or_else(Vec::new, |t| t.subscriptions.keys().cloned().collect())
    }

    /// Whether a topic is reliable and the schema subject bound to it.
    pub(crate) fn dispatch_and_subject(&self, topic: &str) -> Option<(bool, Option<&str>)> {
        let topic = self.topics.get(topic)?;
        Some((topic.reliable, topic.schema_subject.as_deref()))
    }

    pub(crate) fn subscription_stats(&self, topic: &str, name: &str) -> Option<SubscriptionStats> {
        let s = self.topics.get(topic)?.subscriptions.get(name)?;
        Some(SubscriptionStats {
            cursor: s.cursor,
            acked: s.acked,
            unacked: s.in_flight.len(),
            consumers: s.consumers.values().filter(|c| c.stream.is_some()).count(),
            delivered: s.delivered,
            redelivery_pending: s.redeliver.len() + s.delayed.len(),
        })
    }

    /// The figures the real broker's Prometheus exporter publishes per topic
    /// and subscription, under its names: messages in, active consumers, and
    /// for reliable subscriptions the messages not acknowledged yet
    /// (`danube_subscription_lag_messages`; undispatched, in flight or
    /// waiting for redelivery).
    pub(crate) fn exposition(&self) -> String {
        let mut lag = String::new();
        let mut consumers = String::new();
        let mut messages_in = String::new();
        for (name, topic) in &self.topics {
            let topic_label = escape_label(name);
            messages_in.push_str(&format!(
                "danube_topic_messages_in_total{{topic=\"{topic_label}\"}} {}\n",
                topic.records.len()
            ));
            for (subscription, s) in &topic.subscriptions {
                let labels = format!(
                    "topic=\"{topic_label}\",subscription=\"{}\"",
                    escape_label(subscription)
                );
                let active = s.consumers.values().filter(|c| c.stream.is_some()).count();
                consumers.push_str(&format!(
                    "danube_subscription_active_consumers{{{labels}}} {active}\n"
                ));
                if topic.reliable {
                    let undispatched = (topic.records.len() as u64).saturating_sub(s.cursor);
                    let held = s.in_flight.len() + s.redeliver.len() + s.delayed.len();
                    lag.push_str(&format!(
                        "danube_subscription_lag_messages{{{labels}}} {}\n",
                        undispatched + held as u64
                    ));
                }
            }
        }
        format!(
            "# TYPE danube_topic_messages_in_total counter\n{messages_in}\
             # TYPE danube_subscription_active_consumers gauge\n{consumers}\
             # TYPE danube_subscription_lag_messages gauge\n{lag}"
        )
    }

    fn consumer_location(&self, consumer_id: u64) -> Result<(String, String), Status> {
        self.consumers.get(&consumer_id).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "The consumer with the id {consumer_id} does not exist"
            ))
        })
    }

    fn subscription_mut(&mut self, topic: &str, name: &str) -> Result<&mut Subscription, Status> {
        self.topics
            .get_mut(topic)
            .ok_or_else(|| Status::not_found(format!("Unable to find the topic: {topic}")))?
            .subscriptions
            .get_mut(name)
            .ok_or_else(|| {
                Status::not_found(format!("The subscription {name} does not exist on {topic}"))
            })
    }

    /// Resolves the topic and offset an ack or nack refers to.
    fn locate(
        &self,
        msg_id: Option<&proto::MsgId>,
        subscription: &str,
    ) -> Result<(String, u64), Status> {
        let msg_id = msg_id.ok_or_else(|| Status::invalid_argument("The request has no msg_id"))?;
        let topic = self.topics.get(&msg_id.topic_name).ok_or_else(|| {
            Status::not_found(format!("Unable to find the topic: {}", msg_id.topic_name))
        })?;
        if !topic.subscriptions.contains_key(subscription) {
            return Err(Status::not_found(format!(
                "The subscription {subscription} does not exist on {}",
                msg_id.topic_name
            )));
        }
        if msg_id.topic_offset >= topic.records.len() as u64 {
            return Err(Status::invalid_argument(format!(
                "The offset {} is past the end of {}",
                msg_id.topic_offset, msg_id.topic_name
            )));
        }
        Ok((msg_id.topic_name.clone(), msg_id.topic_offset))
    }

    /// Delivers whatever each subscription of the topic may now deliver.
    fn dispatch(&mut self, topic_name: &str) {
        let Some(topic) = self.topics.get_mut(topic_name) else {
            return;
        };
        let ctx = Ctx {
            topic: topic_name,
            records: &topic.records,
            reliable: topic.reliable,
            limits: self.limits,
            broker_url: &self.broker_url,
            now: Instant::now(),
        };
        for (name, subscription) in &mut topic.subscriptions {
            if let Some(deadline) = subscription.dispatch(name, &ctx) {
                self.timer.note(deadline);
            }
        }
    }
}

impl Subscription {
    fn new(kind: SubscriptionType, cursor: u64) -> Self {
        Subscription {
            kind,
            cursor,
            redeliver: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            delayed: BTreeMap::new(),
            acked: 0,
            delivered: 0,
            consumers: BTreeMap::new(),
            round_robin: 0,
        }
    }

    /// Ends the consumer's stream, if any, and queues its unacked messages
    /// for redelivery.
    fn release(&mut self, consumer_id: u64) {
        if let Some(consumer) = self.consumers.get_mut(&consumer_id) {
            consumer.stream = None;
        }
        let taken: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.consumer == consumer_id)
            .map(|(&offset, _)| offset)
            .collect();
        for offset in taken {
            self.in_flight.remove(&offset);
            self.redeliver.insert(offset);
        }
    }

    /// Dispatches and returns the earliest ack deadline it created, if any.
    fn dispatch(&mut self, name: &str, ctx: &Ctx) -> Option<Instant> {
        if !ctx.reliable {
            // Best effort: each new message goes to a consumer connected now, or nowhere.
            while let Some(record) = ctx.records.get(self.cursor as usize) {
                self.cursor += 1;
                if let Some(consumer) = self.pick(record, ctx.records)
                    && self.send(consumer, name, record, ctx)
                {
                    self.delivered += 1;
                }
            }
            return None;
        }

        let mut first_deadline = None;
        while self.in_flight.len() < ctx.limits.max_unacked_messages {
            let (offset, redelivery) = match self.redeliver.first() {
                Some(&offset) => (offset, true),
                None if (self.cursor as usize) < ctx.records.len() => (self.cursor, false),
                None => break,
            };
            let Some(record) = ctx.records.get(offset as usize) else {
                break;
            };
            let Some(consumer) = self.pick(record, ctx.records) else {
                break;
            };
            if !self.send(consumer, name, record, ctx) {
                // The stream was gone: `send` released the consumer; pick again.
                continue;
            }
            if redelivery {
                self.redeliver.remove(&offset);
            } else {
                self.cursor += 1;
            }
            let deadline = ctx.now + ctx.limits.ack_timeout;
            first_deadline.get_or_insert(deadline);
            self.in_flight
                .insert(offset, InFlight { consumer, deadline });
            self.delivered += 1;
        }
        first_deadline
    }

    /// Chooses the consumer for a message according to the subscription type.
    fn pick(&mut self, record: &Record, records: &[Record]) -> Option<u64> {
        let attached = |c: &Consumer| c.stream.is_some();
        match self.kind {
            SubscriptionType::Exclusive | SubscriptionType::Failover => self
                .consumers
                .iter()
                .find(|(_, c)| attached(c))
                .map(|(&id, _)| id),
            SubscriptionType::Shared => self.next_round_robin(),
            SubscriptionType::KeyShared => {
                let Some(key) = record.message.routing_key.as_deref() else {
                    return self.next_round_robin();
                };
                // A key whose earlier messages are still unacked stays with
                // their consumer, so that per-key order survives rebalancing.
                let holder = self.in_flight.iter().find(|(offset, f)| {
                    records
                        .get(**offset as usize)
                        .is_some_and(|r| r.message.routing_key.as_deref() == Some(key))
                        && self.consumers.get(&f.consumer).is_some_and(attached)
                });
                if let Some((_, f)) = holder {
                    return Some(f.consumer);
                }
                let mut candidates: Vec<(&str, u64)> = self
                    .consumers
                    .iter()
                    .filter(|(_, c)| attached(c) && c.accepts(key))
                    .map(|(&id, c)| (c.name.as_str(), id))
                    .collect();
                candidates.sort();
                let index = fnv1a(key) % candidates.len().max(1) as u64;
                candidates.get(index as usize).map(|&(_, id)| id)
            }
        }
    }

    fn next_round_robin(&mut self) -> Option<u64> {
        let attached: Vec<u64> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.stream.is_some())
            .map(|(&id, _)| id)
            .collect();
        let id = *attached.get(self.round_robin % attached.len().max(1))?;
        self.round_robin = self.round_robin.wrapping_add(1);
        Some(id)
    }

    /// Pushes a message down the consumer's stream; on a closed stream the
    /// consumer is released and `false` returned.
    fn send(&mut self, consumer_id: u64, name: &str, record: &Record, ctx: &Ctx) -> bool {
        let Some(stream) = self
            .consumers
            .get(&consumer_id)
            .and_then(|c| c.stream.as_ref())
        else {
            return false;
        };
        let message = &record.message;
        let wire = proto::StreamMessage {
            request_id: record.request_id,
            msg_id: Some(proto::MsgId {
                producer_id: message.producer_id,
                topic_name: ctx.topic.to_owned(),
                broker_addr: ctx.broker_url.to_owned(),
                topic_offset: message.offset,
            }),
            payload: message.payload.clone().into(),
            publish_time: message.publish_time,
            producer_name: message.producer_name.clone(),
            subscription_name: name.to_owned(),
            attributes: message.attributes.clone(),
            schema_id: message.schema_id,
            schema_version: message.schema_version,
            routing_key: message.routing_key.clone(),
        };
        if stream.tx.send(Ok(wire)).is_ok() {
            return true;
        }
        self.release(consumer_id);
        false
    }
}

impl Consumer {
    /// Key filters are glob patterns; a consumer without filters takes any key.
    fn accepts(&self, key: &str) -> bool {
        self.key_filters.is_empty() || self.key_filters.iter().any(|p| glob_match(p, key))
    }
}

/// Matches `*` (any run of characters) and `?` (one character).
fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The hash the client uses to route keys to partitions (FNV-1a, 64 bit).
fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_the_broker_format() {
        assert!(validate_topic_name("/default/orders").is_ok());
        assert!(validate_topic_name("/ns_1/orders-part-0").is_ok());
        for bad in [
            "",
            "orders",
            "/default",
            "/default/",
            "//x",
            "/a/b/c",
            "a/b/c",
            "/a/b c",
        ] {
            let status = validate_topic_name(bad).expect_err(bad);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn globs_match_like_key_filters() {
        assert!(glob_match("user-*", "user-42"));
        assert!(glob_match("eu-west-?", "eu-west-1"));
        assert!(!glob_match("eu-west-?", "eu-west-12"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b", "aXXc"));
    }
}
