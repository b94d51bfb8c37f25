//! The sink pipeline: consume from Danube, batch, hand batches to the guest,
//! then acknowledge what was written and dead-letter what never can be.
//!
//! A batch takes every message already received (up to `batch_size`) and is
//! flushed when it is full, when it is `batch_timeout_ms` old, or when no
//! message came for `linger_ms` (0: at once): reliable topics let only
//! a few unacked messages out per subscription, so waiting for more than is
//! there would stall. A sink handed nothing for `idle_tick_ms` is handed an
//! empty batch, a tick, for connectors that gather records across calls to
//! write what they hold on time. Two batches are kept in flight so the worker round trip
//! is hidden, and while both are busy the next one fills.
//! A message is acknowledged only after the guest reported it written, or
//! after it reached the dead-letter topic.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use danube_core::message::StreamMessage;
use futures::Future;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::danube::{self, Absent, Consume, Danube, DanubeFailure};
use super::dead_letter::{DeadLetter, Rejected};
use super::delivery_watch::Watcher;
use super::retry::{self, RetryPolicy};
use super::worker::Guest;
use super::{Stop, new_trace_id, outcome_error};
use crate::config::{ConnectorConfig, OnExhausted};
use crate::contract::{
    Call, CallOutcome, ConnectorError, ConsumerConfig, RecordFailure, SchemaRef, SinkRecord,
};
use crate::observability::Status;
use crate::observability::tap::{Direction, TappedRecord};
use crate::operations::Pause;
use crate::schema::{MessageSchemas, Registry, SchemaError, SchemaRules, Verdict};

/// Batches handed to the worker and not yet answered.
const BATCHES_IN_FLIGHT: usize = 2;

/// A consumed message and the consumer (by index) that must acknowledge it.
struct Delivery {
    consumer: usize,
    message: StreamMessage,
    /// The message's schema, once looked up.
    schema: Option<SchemaRef>,
    /// The payload as the sink sees it, when it differs (Avro as JSON).
    decoded: Option<Vec<u8>>,
}

/// Batches a worker was handed but never answered, with how many workers
/// died on them: they are replayed to the next worker, and a batch that keeps
/// killing workers goes to the dead-letter topic instead of looping forever.
struct Unsettled {
    deliveries: Vec<Delivery>,
    crashes: u32,
}

impl Unsettled {
    /// A batch no worker died on yet.
    fn new(deliveries: Vec<Delivery>) -> Unsettled {
        Unsettled {
            deliveries,
            crashes: 0,
        }
    }
}

/// The batches handed to the worker and not answered yet, in order; how
/// many records they hold (for the in-flight gauge); and when the worker
/// last got or answered one (the idle tick counts from it).
struct InFlight<F: Future> {
    batches: FuturesOrdered<F>,
    records: usize,
    last_call: Instant,
}

impl<F, R> InFlight<F>
where
    F: Future<Output = (Unsettled, R)>,
{
    fn new() -> InFlight<F> {
        InFlight {
            batches: FuturesOrdered::new(),
            records: 0,
            last_call: Instant::now(),
        }
    }

    /// Hands `unsettled` to the worker through `write`.
    fn hand(&mut self, unsettled: Unsettled, write: impl FnOnce(Unsettled) -> F) {
        self.records += unsettled.deliveries.len();
        self.batches.push_back(write(unsettled));
        self.last_call = Instant::now();
    }

    /// The oldest batch's answer, once it comes.
    async fn next(&mut self) -> Option<(Unsettled, R)> {
        let answered = self.batches.next().await?;
        self.records -= answered.0.deliveries.len();
        self.last_call = Instant::now();
        Some(answered)
    }

    fn len(&self) -> usize {
        self.batches.len()
    }

    fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// The Danube side of a sink: consumers, acknowledgements, the dead-letter
/// topic and unsettled batches. It outlives worker restarts, so that
/// subscriptions stay open and nothing handed to a dead worker is lost.
pub struct SinkPipeline<'a, D: Danube> {
    config: &'a ConnectorConfig,
    deliveries: mpsc::Receiver<Delivery>,
    ackers: Vec<mpsc::UnboundedSender<StreamMessage>>,
    consumer_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// What consumer tasks could not mend (a subscription the broker refuses).
    failures: mpsc::UnboundedReceiver<Stop>,
    /// Tells consumer tasks still waiting for their topic to give up.
    ended: CancellationToken,
    /// Subscriptions not open yet; at 0 the connector is ready.
    unsubscribed: Arc<AtomicUsize>,
    dead_letter: DeadLetter<D>,
    /// The schemas of consumed messages, and what each consumer asks of them.
    schemas: MessageSchemas,
    schema_rules: Vec<SchemaRules>,
    policy: RetryPolicy,
    replay: VecDeque<Unsettled>,
    consuming: bool,
    /// Batches settled (acknowledged or dead-lettered) so far.
    settled: u64,
    /// While paused, no message is taken; batches taken are finished.
    pause: Pause,
}

impl<'a, D: Danube> SinkPipeline<'a, D> {
    /// Starts a consumer task for every topic the connector asked for; each
    /// subscribes as soon as its topic exists.
    pub async fn start(
        danube: &D,
        config: &'a ConnectorConfig,
        policy: RetryPolicy,
        consumers: Vec<ConsumerConfig>,
        shutdown: &watch::Receiver<bool>,
        pause: Pause,
    ) -> Result<SinkPipeline<'a, D>, Stop> {
        let host = &config.host;
        let limit = Duration::from_millis(host.processing.publish_timeout_ms);
        let batch_size = host.processing.batch_size as usize;
        let (deliveries_tx, deliveries) = mpsc::channel::<Delivery>(batch_size * BATCHES_IN_FLIGHT);
        let (failures_tx, failures) = mpsc::unbounded_channel();
        let ended = CancellationToken::new();
        let unsubscribed = Arc::new(AtomicUsize::new(consumers.len()));
        let mut ackers = Vec::new();
        let mut consumer_tasks = Vec::new();
        for (index, consumer_config) in consumers.iter().enumerate() {
            let (ack_tx, ack_rx) = mpsc::unbounded_channel();
            ackers.push(ack_tx);
            let subscription = Subscription {
                danube: danube.clone(),
                name: format!("{}-{index}", host.connector_name),
                config: consumer_config.clone(),
                policy: policy.clone(),
                limit,
                check_interval: Duration::from_millis(host.broker.check_interval_ms.max(1)),
                unsubscribed: Arc::clone(&unsubscribed),
            };
            let watcher =
                Watcher::new(consumer_config, &host.broker, limit, policy.metrics.clone());
            // Subscribing happens in the task: a topic that does not exist
            // yet is waited for there, while the others flow.
            consumer_tasks.push(tokio::spawn(
                consume(
                    subscription,
                    watcher,
                    index,
                    deliveries_tx.clone(),
                    ack_rx,
                    Stopping {
                        shutdown: shutdown.clone(),
                        ended: ended.clone(),
                    },
                    failures_tx.clone(),
                )
                .in_current_span(),
            ));
        }
        Ok(SinkPipeline {
            config,
            deliveries,
            ackers,
            consumer_tasks,
            failures,
            ended,
            unsubscribed,
            dead_letter: DeadLetter::new(danube, config, &policy, limit),
            schemas: MessageSchemas::new(Registry::new(danube, &policy, limit)),
            schema_rules: consumers
                .iter()
                .map(|c| SchemaRules {
                    expected_subject: c.expected_schema_subject.clone(),
                    decode_avro: c.decode_avro,
                })
                .collect(),
            policy,
            replay: VecDeque::new(),
            consuming: true,
            settled: 0,
            pause,
        })
    }

    /// Feeds `worker` until `shutdown` turns true (then stops consuming and
    /// finishes every batch) or something stops the pipeline. When the worker
    /// dies, the batches it held are kept for the next one.
    pub async fn run(
        &mut self,
        worker: &impl Guest,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let host = &self.config.host;
        let processing = &host.processing;
        let batch_size = processing.batch_size as usize;
        // Outlives the batches in flight, which borrow it.
        let policy = self.policy.clone();
        let metrics = &policy.metrics;
        let mut batch: Vec<Delivery> = Vec::with_capacity(batch_size);
        let mut batch_started = Instant::now();
        let mut last_arrival = Instant::now();
        let idle_tick = Duration::from_millis(processing.idle_tick_ms);
        let write = |unsettled| process(worker, unsettled, &policy);
        let mut in_flight = InFlight::new();
        let mut stopping = *shutdown.borrow();

        loop {
            metrics.set_in_flight(
                batch.len()
                    + self
                        .replay
                        .iter()
                        .map(|u| u.deliveries.len())
                        .sum::<usize>()
                    + in_flight.records,
            );
            while in_flight.len() < BATCHES_IN_FLIGHT
                && let Some(unsettled) = self.replay.pop_front()
            {
                // The restart budget allows `max_retries` deaths in a row:
                // a batch that caused that many is dead-lettered before the
                // next worker has to die on it too.
                if unsettled.crashes >= host.retry.max_retries.max(1) {
                    self.dead_letter_all(unsettled).await?;
                    // Settled: the next batch's deaths are not this one's.
                    self.settled += 1;
                } else {
                    in_flight.hand(unsettled, write);
                }
            }
            let due = !batch.is_empty()
                && (batch.len() >= batch_size
                    || stopping
                    || !self.consuming
                    || Instant::now() >= flush_deadline(batch_started, last_arrival, processing));
            if due && in_flight.len() < BATCHES_IN_FLIGHT {
                let deliveries = std::mem::take(&mut batch);
                in_flight.hand(Unsettled::new(deliveries), write);
            }
            let idle = batch.is_empty()
                && in_flight.is_empty()
                && self.replay.is_empty()
                && self.consuming
                && !stopping;
            let tick_at = (idle && !idle_tick.is_zero()).then(|| in_flight.last_call + idle_tick);
            if tick_at.is_some_and(|at| Instant::now() >= at) {
                in_flight.hand(Unsettled::new(Vec::new()), write);
                continue;
            }
            // After the flush above: a batch just handed over makes room
            // for the next one to fill while it is written.
            let full = batch.len() >= batch_size;
            if (stopping || !self.consuming)
                && batch.is_empty()
                && in_flight.is_empty()
                && self.replay.is_empty()
            {
                return Ok(());
            }
            let deadline = match tick_at {
                _ if !batch.is_empty() => flush_deadline(batch_started, last_arrival, processing),
                Some(at) => at,
                None => Instant::now() + Duration::from_secs(3600),
            };

            tokio::select! {
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    tracing::info!(batched = batch.len(), in_flight = in_flight.len(), "draining: no more messages taken, finishing batches in flight");
                }
                _ = self.pause.changed() => {}
                next = self.deliveries.recv(), if self.consuming && !stopping && !full && !self.pause.is_paused() => match next {
                    Some(delivery) => {
                        // This message and everything already here after it
                        // join the batch.
                        let mut next = Some(delivery);
                        while let Some(delivery) = next.take() {
                            if let Some(delivery) = self.admit(delivery).await? {
                                if batch.is_empty() {
                                    batch_started = Instant::now();
                                }
                                last_arrival = Instant::now();
                                batch.push(delivery);
                            }
                            if batch.len() >= batch_size {
                                break;
                            }
                            match self.deliveries.try_recv() {
                                Ok(delivery) => next = Some(delivery),
                                Err(mpsc::error::TryRecvError::Empty) => {}
                                Err(mpsc::error::TryRecvError::Disconnected) => self.consuming = false,
                            }
                        }
                    }
                    None => self.consuming = false,
                },
                _ = tokio::time::sleep_until(deadline), if (!batch.is_empty() && in_flight.len() < BATCHES_IN_FLIGHT) || tick_at.is_some() => {}
                Some(stop) = self.failures.recv() => return Err(stop),
                // With batches in flight their calls fail instead.
                gone = worker.exited(), if in_flight.is_empty() => {
                    self.keep_for_next_worker(&mut batch);
                    return Err(Stop::WorkerGone(gone.to_string()));
                }
                Some((mut unsettled, result)) = in_flight.next(), if !in_flight.is_empty() => match result {
                    Ok(failures) => {
                        if !unsettled.deliveries.is_empty() {
                            self.settle(unsettled.deliveries, failures).await?;
                            self.settled += 1;
                        }
                    }
                    Err(Stop::WorkerGone(why)) => {
                        // Keep this batch, the ones after it and the one
                        // being filled, in order, for the next worker. Batches
                        // in flight came from the front of the replay queue
                        // (or after it, once it was empty), so they go back
                        // to its front: replayed in another order, the next
                        // worker would die on a batch not yet charged and
                        // the restart budget run out before the culprit is
                        // dead-lettered.
                        unsettled.crashes += 1;
                        let mut requeued = vec![unsettled];
                        // Only the head batch was running (the worker takes
                        // calls one at a time): the ones behind it are not
                        // charged with the crash.
                        while let Some((later, _)) = in_flight.next().await {
                            requeued.push(later);
                        }
                        // A tick (an empty batch) is not replayed: the
                        // next worker gets its own when idle.
                        for unsettled in requeued.into_iter().rev().filter(|u| !u.deliveries.is_empty()) {
                            self.replay.push_front(unsettled);
                        }
                        self.keep_for_next_worker(&mut batch);
                        return Err(Stop::WorkerGone(why));
                    }
                    Err(stop) => return Err(stop),
                },
            }
        }
    }

    /// Queues the batch being filled behind the ones to replay, for the next
    /// worker.
    fn keep_for_next_worker(&mut self, batch: &mut Vec<Delivery>) {
        if !batch.is_empty() {
            self.replay.push_back(Unsettled::new(std::mem::take(batch)));
        }
    }

    /// Every subscription is open.
    pub fn subscribed(&self) -> bool {
        self.unsubscribed.load(Ordering::Acquire) == 0
    }

    /// Batches settled so far: a worker that settled one made progress.
    pub fn progress(&self) -> u64 {
        self.settled
    }

    /// Stops the consumers once every acknowledgement was sent.
    pub async fn finish(self) {
        self.ended.cancel();
        drop(self.ackers);
        for task in self.consumer_tasks {
            let _ = task.await;
        }
    }

    /// Looks up a message's schema and checks it against its route's
    /// expected subject: a message that cannot go to this sink is
    /// dead-lettered with the reason (`None`).
    async fn admit(&mut self, mut delivery: Delivery) -> Result<Option<Delivery>, Stop> {
        let message = &delivery.message;
        let verdict = self
            .schemas
            .check(
                message.schema_id,
                message.schema_version,
                &message.payload,
                &self.schema_rules[delivery.consumer],
            )
            .await
            .map_err(|e| match e {
                SchemaError::Refused(why) => Stop::Config(why),
                unreachable => Stop::Fatal(format!(
                    "{unreachable}; the record was not acknowledged and will be delivered again"
                )),
            })?;
        match verdict {
            Verdict::Pass { schema, decoded } => {
                delivery.schema = schema;
                delivery.decoded = decoded;
                Ok(Some(delivery))
            }
            Verdict::Reject(why) => {
                let failure = RecordFailure {
                    index: 0,
                    error: ConnectorError::InvalidData(why),
                };
                self.settle(vec![delivery], vec![failure]).await?;
                Ok(None)
            }
        }
    }

    /// Acknowledges the written records and dead-letters the failed ones.
    async fn settle(
        &self,
        deliveries: Vec<Delivery>,
        failures: Vec<RecordFailure>,
    ) -> Result<(), Stop> {
        let failed: HashMap<usize, ConnectorError> = failures
            .into_iter()
            .map(|f| (f.index as usize, f.error))
            .collect();
        for (index, delivery) in deliveries.iter().enumerate() {
            if let Some(error) = failed.get(&index) {
                self.dead_letter
                    .send(Rejected::consumed(&delivery.message), error)
                    .await
                    .map_err(|e| Stop::Fatal(format!(
                        "cannot write to the dead-letter topic {}: {e}; the record stays unacknowledged",
                        self.dead_letter.topic
                    )))?;
            }
            let topic = &delivery.message.msg_id.topic_name;
            match failed.contains_key(&index) {
                true => self.policy.metrics.dead_lettered(topic, 1),
                false => self.policy.metrics.sent(topic, 1),
            }
            self.ack(delivery);
        }
        Ok(())
    }

    /// A batch on which workers kept dying: each record goes to the
    /// dead-letter topic, so one poisonous record cannot stop the stream.
    async fn dead_letter_all(&self, unsettled: Unsettled) -> Result<(), Stop> {
        let error = ConnectorError::InvalidData(format!(
            "the connector's worker died {} times while writing the batch holding this record",
            unsettled.crashes
        ));
        let failures = (0..unsettled.deliveries.len())
            .map(|index| RecordFailure {
                index: index as u32,
                error: error.clone(),
            })
            .collect();
        self.settle(unsettled.deliveries, failures).await
    }

    fn ack(&self, delivery: &Delivery) {
        // A closed acker means its consumer ended; the broker redelivers.
        let _ = self.ackers[delivery.consumer].send(delivery.message.clone());
    }
}

fn flush_deadline(
    started: Instant,
    last_arrival: Instant,
    processing: &crate::config::ProcessingConfig,
) -> Instant {
    (started + Duration::from_millis(processing.batch_timeout_ms))
        .min(last_arrival + Duration::from_millis(processing.linger_ms))
}

/// Hands a batch to the guest, retrying the whole batch (or the records the
/// guest marked retryable) with backoff. Resolves to the batch and the
/// records that failed for good: invalid ones, and, once the retries are
/// spent and `[retry] on_exhausted = "dead_letter"`, the retryable ones.
async fn process<'a>(
    worker: &'a impl Guest,
    unsettled: Unsettled,
    policy: &'a RetryPolicy,
) -> (Unsettled, Result<Vec<RecordFailure>, Stop>) {
    let result = process_records(worker, &unsettled.deliveries, unsettled.crashes, policy).await;
    (unsettled, result)
}

async fn process_records(
    worker: &impl Guest,
    deliveries: &[Delivery],
    crashes: u32,
    policy: &RetryPolicy,
) -> Result<Vec<RecordFailure>, Stop> {
    let mut backoff = policy.backoff();
    if !deliveries.is_empty() {
        policy.metrics.batch_size(deliveries.len());
    }
    for delivery in deliveries {
        let message = &delivery.message;
        policy.metrics.tap(|| {
            TappedRecord::new(
                Direction::Consumed,
                &message.msg_id.topic_name,
                message.routing_key.as_deref(),
                message.attributes.iter(),
                delivery.decoded.as_deref().unwrap_or(&message.payload),
            )
        });
    }
    // Indices (into `deliveries`) still to write, and final failures.
    let mut todo: Vec<usize> = (0..deliveries.len()).collect();
    let mut failed: Vec<RecordFailure> = Vec::new();
    // Each delivery to a worker counts, including to workers that died.
    let mut attempt = crashes;
    loop {
        let trace_id = new_trace_id();
        let records = todo
            .iter()
            .map(|&i| to_sink_record(&deliveries[i], attempt))
            .collect();
        tracing::debug!(trace_id = %format_args!("{trace_id:016x}"), records = todo.len(), attempt, "processing batch");
        let outcome = worker
            .call(trace_id, Call::ProcessBatch { records })
            .await
            .map_err(|e| Stop::WorkerGone(e.to_string()))?;
        let retry_why = match outcome {
            CallOutcome::Processed(failures) => {
                let mut again = Vec::new();
                let mut why = None;
                for f in failures {
                    let Some(&index) = todo.get(f.index as usize) else {
                        return Err(Stop::Fatal(format!(
                            "the connector reported a failure for record {} of a batch of {}",
                            f.index,
                            todo.len()
                        )));
                    };
                    match f.error {
                        ConnectorError::Retryable(m) => {
                            again.push(index);
                            why = Some(m);
                        }
                        ConnectorError::InvalidData(_) => failed.push(RecordFailure {
                            index: index as u32,
                            error: f.error,
                        }),
                        other => return Err(Stop::Fatal(format!("writing a record: {other}"))),
                    }
                }
                match why {
                    None => {
                        if backoff.attempts() > 0 {
                            policy.note_recovered();
                        }
                        return Ok(failed);
                    }
                    Some(why) => {
                        todo = again;
                        why
                    }
                }
            }
            CallOutcome::Error(ConnectorError::Retryable(why)) => why,
            CallOutcome::Error(ConnectorError::InvalidData(why)) => {
                failed.extend(todo.iter().map(|&index| RecordFailure {
                    index: index as u32,
                    error: ConnectorError::InvalidData(why.clone()),
                }));
                return Ok(failed);
            }
            other => return Err(outcome_error("process-batch", other)),
        };
        match backoff.next_delay() {
            Some(delay) => {
                policy.note_retry("process_batch", &retry_why);
                tracing::warn!(trace_id = %format_args!("{trace_id:016x}"), error = %retry_why, records = todo.len(), retry_in_ms = delay.as_millis() as u64, "batch failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            None => {
                let retries = policy.config.max_retries;
                return match policy.config.on_exhausted {
                    OnExhausted::DeadLetter => {
                        let error = ConnectorError::Retryable(format!(
                            "retries exhausted: writing failed {} times, last: {retry_why}",
                            retries + 1
                        ));
                        failed.extend(todo.iter().map(|&index| RecordFailure {
                            index: index as u32,
                            error: error.clone(),
                        }));
                        Ok(failed)
                    }
                    OnExhausted::Stop => Err(Stop::Fatal(format!(
                        "writing a batch kept failing after {retries} retries: {retry_why}; its records were not acknowledged and will be delivered again ([retry] on_exhausted = \"stop\")"
                    ))),
                };
            }
        }
    }
}

fn to_sink_record(delivery: &Delivery, redelivery_count: u32) -> SinkRecord {
    let message = &delivery.message;
    SinkRecord {
        topic: message.msg_id.topic_name.clone(),
        payload: delivery
            .decoded
            .clone()
            .unwrap_or_else(|| message.payload.to_vec()),
        attributes: message
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        key: message.routing_key.clone(),
        publish_time: message.publish_time,
        producer: message.producer_name.clone(),
        offset: message.msg_id.topic_offset,
        redelivery_count,
        schema: delivery.schema.clone(),
    }
}

/// A consumer task's link to the broker: what it needs to subscribe (again),
/// and how it retries.
struct Subscription<D> {
    danube: D,
    /// The consumer's name.
    name: String,
    config: ConsumerConfig,
    policy: RetryPolicy,
    /// Bound on one call to the broker.
    limit: Duration,
    /// How often to look for partitions created since subscribing.
    check_interval: Duration,
    /// The pipeline's subscriptions not open yet.
    unsubscribed: Arc<AtomicUsize>,
}

/// An open subscription: the client's consumer, its message stream, and the
/// topics it covers (the topic itself, or its partitions).
struct Subscribed<C> {
    consumer: C,
    messages: mpsc::Receiver<StreamMessage>,
    topics: Vec<String>,
    /// The topic did not exist when the consumer first looked.
    waited: bool,
}

/// How often a sink looks whether the topic it waits for exists: the
/// messages published between its creation and the subscription are not
/// delivered to the sink (a new subscription starts at the latest message),
/// so the wait ends as soon as the broker has it; a lookup is one small call.
const TOPIC_POLL: Duration = Duration::from_millis(200);

impl<D: Danube> Subscription<D> {
    /// Its condition on `/health` while it cannot consume.
    fn condition(&self) -> String {
        format!(
            "subscription {} to {}",
            self.config.subscription, self.config.topic
        )
    }

    /// Subscribes and opens the message stream, waiting as long as it takes
    /// for the topic to exist (a sink may start before its source; a producer
    /// creates the topic) and for the broker to answer, with backoff and the
    /// reason on `/health` meanwhile. `None` once `stop` fires; an error only
    /// for what waiting cannot mend (a topic name or subscription the broker
    /// refuses): an outage, even one the client calls unrecoverable, is
    /// waited out.
    async fn open(
        &self,
        stop: &mut Stopping,
    ) -> Result<Option<Subscribed<D::Consumer>>, DanubeFailure> {
        let (topic, subscription) = (&self.config.topic, &self.config.subscription);
        let mut backoff = self.policy.backoff();
        let mut waited = false;
        loop {
            let attempt = async {
                let topics = danube::bounded(self.limit, self.danube.partitions(topic)).await?;
                if topics.is_empty() {
                    return Err(DanubeFailure {
                        message: format!("the topic {topic} does not exist"),
                        retryable: true,
                        code: None,
                        absent: Some(Absent::Topic),
                    });
                }
                let mut consumer =
                    danube::bounded(self.limit, self.danube.subscribe(&self.name, &self.config))
                        .await?;
                let messages = danube::bounded(self.limit, consumer.receive()).await?;
                Ok(Subscribed {
                    consumer,
                    messages,
                    topics,
                    waited,
                })
            };
            let failure = tokio::select! {
                opened = attempt => match opened {
                    Ok(subscribed) => {
                        let metrics = &self.policy.metrics;
                        metrics.clear_condition(&self.condition());
                        tracing::info!(%topic, %subscription, topics = ?subscribed.topics, "subscribed");
                        return Ok(Some(subscribed));
                    }
                    Err(failure) => failure,
                },
                _ = stop.fired() => return Ok(None),
            };
            let (detail, wait) = match failure.absent {
                Some(Absent::Topic) => (
                    format!(
                        "waiting for topic {topic}: it does not exist yet; subscription {subscription} starts when a producer creates it"
                    ),
                    TOPIC_POLL,
                ),
                _ if failure.refused() => return Err(failure),
                _ => (
                    format!("cannot subscribe to {topic} as {subscription}, retrying: {failure}"),
                    backoff.next_wait(),
                ),
            };
            // Said once; the condition on /health stays while it lasts.
            if !waited {
                tracing::warn!(retry_in_ms = wait.as_millis() as u64, "{detail}");
            } else {
                tracing::debug!(retry_in_ms = wait.as_millis() as u64, "{detail}");
            }
            waited |= failure.absent == Some(Absent::Topic);
            self.policy.metrics.retry("subscribe");
            self.policy
                .metrics
                .raise_condition(&self.condition(), Status::Degraded, detail);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.fired() => return Ok(None),
            }
        }
    }

    /// Whether the broker now has partitions of the topic that `subscribed`
    /// does not cover: the client looks them up only when subscribing.
    async fn grew(&self, subscribed: &Subscribed<D::Consumer>) -> bool {
        match danube::bounded(self.limit, self.danube.partitions(&self.config.topic)).await {
            Ok(now) => {
                let new: Vec<&String> = now
                    .iter()
                    .filter(|t| !subscribed.topics.contains(t))
                    .collect();
                if !new.is_empty() {
                    tracing::info!(topic = %self.config.topic, new = ?new, "the topic has partitions created since subscribing; subscribing again to consume them");
                }
                !new.is_empty()
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot look up the topic's partitions");
                false
            }
        }
    }
}

/// What ends a consumer task's waiting: a drain, or the pipeline finishing.
struct Stopping {
    shutdown: watch::Receiver<bool>,
    ended: CancellationToken,
}

impl Stopping {
    async fn fired(&mut self) {
        tokio::select! {
            _ = self.shutdown.wait_for(|stop| *stop) => {}
            _ = self.ended.cancelled() => {}
        }
    }

    /// Resolves once a drain was asked for.
    async fn draining(&mut self) {
        // The guard `wait_for` returns must not be held across an await.
        let _ = self.shutdown.wait_for(|stop| *stop).await;
    }
}

/// Owns one consumer: subscribes (waiting for the topic), forwards its
/// messages and performs the acknowledgements the pipeline asks for, until
/// the pipeline stops. It subscribes again when the client ends the message
/// stream on its own (it gives up on some broker errors, such as a stream
/// cancelled by a broker restart: the sink would otherwise wait for ever,
/// looking healthy) and when the topic gained partitions.
async fn consume<D: Danube>(
    subscription: Subscription<D>,
    mut watcher: Watcher,
    index: usize,
    deliveries: mpsc::Sender<Delivery>,
    mut acks: mpsc::UnboundedReceiver<StreamMessage>,
    mut stop: Stopping,
    failures: mpsc::UnboundedSender<Stop>,
) {
    let (policy, limit) = (&subscription.policy, subscription.limit);
    let mut live = match subscription.open(&mut stop).await {
        Ok(Some(subscribed)) => {
            // The last of the pipeline's subscriptions to open makes the
            // connector ready.
            if subscription.unsubscribed.fetch_sub(1, Ordering::AcqRel) == 1 {
                policy.metrics.set_ready(true);
            }
            subscribed
        }
        Ok(None) => return,
        Err(e) => {
            let _ = failures.send(Stop::Fatal(format!(
                "cannot subscribe to {} as {}: {e}",
                subscription.config.topic, subscription.config.subscription
            )));
            return;
        }
    };
    watcher
        .deliveries
        .cover(&live.topics, live.waited, std::time::Instant::now());
    // Taking messages ends on a drain; acknowledging goes on until the
    // pipeline drops the ack channel.
    let mut taking = true;
    let mut checks = tokio::time::interval(subscription.check_interval);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.reset();
    loop {
        // Why to subscribe again, if the stream must be renewed.
        let renew: Option<Renew> = tokio::select! {
            biased;
            ack = acks.recv() => match ack {
                Some(message) => {
                    acknowledge(&mut live.consumer, &message, policy, limit).await;
                    watcher.deliveries.settled(&message.msg_id.topic_name);
                    None
                }
                None => break,
            },
            _ = stop.draining(), if taking => {
                taking = false;
                None
            }
            message = live.messages.recv(), if taking => match message {
                Some(message) => {
                    let topic = &message.msg_id.topic_name;
                    policy.metrics.received(topic, 1);
                    watcher.arrived(topic);
                    if let Some(gap) = watcher.deliveries.delivered(topic, message.msg_id.topic_offset, std::time::Instant::now()) {
                        watcher.gap(gap).await;
                    }
                    if deliveries.send(Delivery { consumer: index, message, schema: None, decoded: None }).await.is_err() {
                        taking = false;
                    }
                    None
                }
                None => Some(Renew::StreamEnded),
            },
            _ = checks.tick(), if taking => {
                if subscription.grew(&live).await {
                    Some(Renew::NewPartitions)
                } else if watcher.check().await {
                    Some(Renew::Stalled)
                } else {
                    None
                }
            }
        };
        let Some(why) = renew else { continue };
        if why == Renew::StreamEnded {
            tracing::warn!(topic = %subscription.config.topic, subscription = %subscription.config.subscription, "the client ended the message stream; subscribing again");
            policy.note_retry("receive", &"the message stream ended");
        }
        live.consumer.close().await;
        match subscription.open(&mut stop).await {
            Ok(Some(renewed)) => {
                if why == Renew::StreamEnded {
                    policy.note_recovered();
                }
                live = renewed;
                // Partitions created since are watched from their start.
                let created = why == Renew::NewPartitions || live.waited;
                watcher
                    .deliveries
                    .cover(&live.topics, created, std::time::Instant::now());
            }
            // Draining: what was delivered is still acknowledged.
            Ok(None) => taking = false,
            Err(e) => {
                // The broker refuses the subscription it accepted before:
                // nothing more comes; what is in hand is still acknowledged.
                let _ = failures.send(Stop::Fatal(format!(
                    "cannot subscribe again to {} as {}: {e}",
                    subscription.config.topic, subscription.config.subscription
                )));
                taking = false;
            }
        }
    }
    live.consumer.close().await;
}

/// Why a consumer subscribes again.
#[derive(Debug, PartialEq, Eq)]
enum Renew {
    /// The client ended the message stream on its own.
    StreamEnded,
    /// The topic gained partitions the consumer does not cover.
    NewPartitions,
    /// The broker holds messages back: a new consumer may get them.
    Stalled,
}

/// Acknowledges one message, retrying temporary failures; one that cannot
/// be acknowledged is delivered again by the broker.
async fn acknowledge(
    consumer: &mut impl Consume,
    message: &StreamMessage,
    policy: &RetryPolicy,
    limit: Duration,
) {
    let mut attempts = retry::Attempts::new(policy, "ack");
    let acked = loop {
        let outcome = danube::bounded(limit, consumer.ack(message))
            .await
            .map_err(danube::split);
        if let Some(settled) = attempts.settle(outcome).await {
            break settled;
        }
    };
    if let Err(e) = acked {
        tracing::warn!(error = %e, offset = message.msg_id.topic_offset, "ack failed; the broker will deliver the message again");
    }
}

#[cfg(test)]
mod tests {
    //! The batching loop on a scripted guest and a broker in memory, on
    //! virtual time: flush timing, replay order and crash charging after a
    //! worker death, and the drain.

    use std::sync::Mutex;

    use super::*;
    use crate::supervisor::test_doubles::{
        Answer, MemoryBroker, ScriptedGuest, test_config, test_consumer, test_policy, until,
    };

    const TOPIC: &str = "/default/in";
    const DEAD_LETTERS: &str = "/default/t-dlq";

    async fn start(
        tables: &str,
    ) -> (
        MemoryBroker,
        SinkPipeline<'static, MemoryBroker>,
        watch::Sender<bool>,
    ) {
        let broker = MemoryBroker::new().await;
        broker.create_topic(TOPIC);
        let config = test_config(tables);
        let consumer = test_consumer(TOPIC);
        let (shutdown, watching) = watch::channel(false);
        let pipeline = SinkPipeline::start(
            &broker,
            config,
            test_policy(config).0,
            vec![consumer],
            &watching,
            Pause::never(),
        )
        .await
        .unwrap_or_else(|_| panic!("the pipeline starts"));
        (broker, pipeline, shutdown)
    }

    /// The records of a `process-batch` call: (payload, redelivery count).
    fn handed(call: &Call) -> Vec<(String, u32)> {
        match call {
            Call::ProcessBatch { records } => records
                .iter()
                .map(|r| {
                    let payload = String::from_utf8_lossy(&r.payload).into_owned();
                    (payload, r.redelivery_count)
                })
                .collect(),
            other => panic!("a sink was called with {}", other.kind()),
        }
    }

    /// A batch is flushed `linger_ms` after its last message, or
    /// `batch_timeout_ms` after its first while messages keep coming.
    #[tokio::test(start_paused = true)]
    async fn a_batch_flushes_after_linger_or_at_its_timeout() {
        let (broker, mut pipeline, shutdown) =
            start("[processing]\nbatch_size = 1000\nlinger_ms = 50\nbatch_timeout_ms = 400\n")
                .await;
        let began = Instant::now();
        let flushed = Arc::new(Mutex::new(Vec::new()));
        let guest = ScriptedGuest::new({
            let flushed = flushed.clone();
            move |call| {
                let at = began.elapsed().as_millis() as u64;
                flushed.lock().unwrap().push((at, handed(call).len()));
                Answer::Outcome(CallOutcome::Processed(Vec::new()))
            }
        });
        let drive = async {
            until(|| pipeline_subscribed(&broker)).await;
            let produced_at = began.elapsed().as_millis() as u64;
            for i in 0..3 {
                broker.produce(TOPIC, format!("a{i}").as_bytes(), &[]);
            }
            until(|| flushed.lock().unwrap().len() == 1).await;
            // One message every 30 ms for 600 ms: never a 50 ms pause, so
            // only the batch timeout flushes.
            let streaming_from = began.elapsed().as_millis() as u64;
            for i in 0..20 {
                broker.produce(TOPIC, format!("b{i}").as_bytes(), &[]);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            until(|| broker.acked(TOPIC).len() == 23).await;
            shutdown.send_replace(true);
            (produced_at, streaming_from)
        };
        let (result, (produced_at, streaming_from)) =
            tokio::join!(pipeline.run(&guest, shutdown.subscribe()), drive);
        result.unwrap_or_else(|e| panic!("{e}"));
        let flushed = flushed.lock().unwrap().clone();
        assert_eq!(flushed[0], (produced_at + 50, 3), "{flushed:?}");
        assert_eq!(flushed[1].0, streaming_from + 400, "{flushed:?}");
        assert_eq!(
            flushed[1].1, 14,
            "messages at 0, 30, .., 390 ms: {flushed:?}"
        );
        assert_eq!(flushed.iter().map(|f| f.1).sum::<usize>(), 23);
        pipeline.finish().await;
    }

    /// Whether the pipeline's consumer has opened its stream (a message
    /// produced before would wait for it anyway; this keeps the timing
    /// exact).
    fn pipeline_subscribed(broker: &MemoryBroker) -> bool {
        broker.subscribed(TOPIC)
    }

    /// A record that kills every worker it is handed to: the batches the
    /// dead worker held are replayed to the next in their original order,
    /// only the batch that was running is charged with the crash, and after
    /// `max_retries` deaths the culprit is dead-lettered and the rest
    /// written. (Requeued behind later batches, as an earlier version did,
    /// the third worker was handed p4 before p2 and p3.)
    #[tokio::test(start_paused = true)]
    async fn a_dead_workers_batches_replay_in_order_and_the_culprit_is_charged() {
        let (broker, mut pipeline, shutdown) =
            start("[processing]\nbatch_size = 1\n\n[retry]\nmax_retries = 3\n").await;
        for i in 0..6 {
            broker.produce(TOPIC, format!("p{i}").as_bytes(), &[]);
        }
        let drive = async {
            until(|| broker.acked(TOPIC).len() == 6).await;
            shutdown.send_replace(true);
        };
        let workers = async {
            let mut workers = Vec::new();
            loop {
                let guest = ScriptedGuest::new(|call| match handed(call)[0].0 == "p2" {
                    true => Answer::Die,
                    false => Answer::Outcome(CallOutcome::Processed(Vec::new())),
                })
                .with_latency(Duration::from_millis(10));
                let result = pipeline.run(&guest, shutdown.subscribe()).await;
                workers.push(guest.calls().iter().map(handed).collect::<Vec<_>>());
                match result {
                    Ok(()) => return workers,
                    Err(Stop::WorkerGone(_)) => {}
                    Err(other) => panic!("{other}"),
                }
            }
        };
        let (workers, ()) = tokio::join!(workers, drive);
        let batches: Vec<Vec<(&str, u32)>> = workers
            .iter()
            .map(|calls| calls.iter().map(|c| (c[0].0.as_str(), c[0].1)).collect())
            .collect();
        assert_eq!(
            batches,
            vec![
                vec![("p0", 0), ("p1", 0), ("p2", 0)],
                vec![("p2", 1)],
                vec![("p2", 2)],
                vec![("p3", 0), ("p4", 0), ("p5", 0)],
            ],
            "each worker's calls: (first record, redelivery count)"
        );
        assert_eq!(broker.published(DEAD_LETTERS), vec!["p2"]);
        let mut acked = broker.acked(TOPIC);
        acked.sort();
        assert_eq!(acked, (0..6).collect::<Vec<u64>>());
        pipeline.finish().await;
    }

    /// While the guest writes one batch, the next is already handed over
    /// (the worker round trip is hidden), and no more than two are.
    #[tokio::test(start_paused = true)]
    async fn the_next_batch_is_handed_over_while_one_is_written() {
        let (broker, mut pipeline, shutdown) = start("[processing]\nbatch_size = 1\n").await;
        for i in 0..6 {
            broker.produce(TOPIC, format!("n{i}").as_bytes(), &[]);
        }
        let guest = ScriptedGuest::new(|_| Answer::Outcome(CallOutcome::Processed(Vec::new())))
            .with_latency(Duration::from_millis(100));
        let drive = async {
            until(|| broker.acked(TOPIC).len() == 6).await;
            shutdown.send_replace(true);
        };
        let (result, ()) = tokio::join!(pipeline.run(&guest, shutdown.subscribe()), drive);
        result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(guest.most_calls_at_once(), BATCHES_IN_FLIGHT);
        pipeline.finish().await;
    }

    /// A drain takes no new message, finishes the batches in flight and the
    /// one being filled, and acknowledges exactly what the guest wrote.
    #[tokio::test(start_paused = true)]
    async fn a_drain_finishes_what_was_handed_and_takes_nothing_more() {
        let (broker, mut pipeline, shutdown) = start("[processing]\nbatch_size = 2\n").await;
        let guest = ScriptedGuest::new(|_| Answer::Outcome(CallOutcome::Processed(Vec::new())))
            .with_latency(Duration::from_millis(100));
        let drive = async {
            until(|| pipeline_subscribed(&broker)).await;
            for i in 0..5 {
                broker.produce(TOPIC, format!("d{i}").as_bytes(), &[]);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            shutdown.send_replace(true);
            // Produced while draining: never taken.
            broker.produce(TOPIC, b"late", &[]);
        };
        let (result, ()) = tokio::join!(pipeline.run(&guest, shutdown.subscribe()), drive);
        result.unwrap_or_else(|e| panic!("{e}"));
        let written: Vec<String> = guest
            .calls()
            .iter()
            .flat_map(handed)
            .map(|(payload, _)| payload)
            .collect();
        assert!(
            !written.is_empty() && !written.contains(&"late".to_string()),
            "{written:?}"
        );
        pipeline.finish().await;
        // What was received and not handed over stays unacknowledged, for
        // the broker to deliver again.
        let mut acked: Vec<String> = broker
            .acked(TOPIC)
            .iter()
            .map(|o| format!("d{o}"))
            .collect();
        acked.sort();
        assert_eq!(acked, written);
    }

    /// An idle sink is handed an empty batch every `idle_tick_ms` after
    /// its last call, none while batches come, and none with ticks off.
    #[tokio::test(start_paused = true)]
    async fn an_idle_sink_is_ticked_with_empty_batches() {
        for (tables, ticking) in [("idle_tick_ms = 300", true), ("idle_tick_ms = 0", false)] {
            let (broker, mut pipeline, shutdown) =
                start(&format!("[processing]\nlinger_ms = 0\n{tables}\n")).await;
            let began = Instant::now();
            let calls = Arc::new(Mutex::new(Vec::new()));
            let guest = ScriptedGuest::new({
                let calls = calls.clone();
                move |call| {
                    let at = began.elapsed().as_millis() as u64;
                    calls.lock().unwrap().push((at, handed(call).len()));
                    Answer::Outcome(CallOutcome::Processed(Vec::new()))
                }
            });
            let drive = async {
                until(|| pipeline_subscribed(&broker)).await;
                // One message every 100 ms for a second: no tick between.
                let streaming_from = began.elapsed().as_millis() as u64;
                for i in 0..10 {
                    broker.produce(TOPIC, format!("m{i}").as_bytes(), &[]);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                until(|| broker.acked(TOPIC).len() == 10).await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                shutdown.send_replace(true);
                streaming_from
            };
            let (result, streaming_from) =
                tokio::join!(pipeline.run(&guest, shutdown.subscribe()), drive);
            result.unwrap_or_else(|e| panic!("{e}"));
            let calls = calls.lock().unwrap().clone();
            let ticks: Vec<u64> = calls.iter().filter(|c| c.1 == 0).map(|c| c.0).collect();
            let last_batch = calls.iter().filter(|c| c.1 > 0).map(|c| c.0).max().unwrap();
            assert!(
                ticks
                    .iter()
                    .all(|&t| t < streaming_from || t >= last_batch + 300),
                "a tick while records came: {calls:?}"
            );
            match ticking {
                true => assert_eq!(
                    ticks
                        .iter()
                        .filter(|&&t| t > last_batch)
                        .copied()
                        .collect::<Vec<_>>(),
                    [last_batch + 300, last_batch + 600, last_batch + 900],
                    "{calls:?}"
                ),
                false => assert!(ticks.is_empty(), "{calls:?}"),
            }
            assert_eq!(calls.iter().map(|c| c.1).sum::<usize>(), 10);
            pipeline.finish().await;
        }
    }
}
