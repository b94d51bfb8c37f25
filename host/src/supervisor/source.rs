//! The source pipeline: poll the guest, publish to Danube
//! ([`Publisher`]), commit what the broker acknowledged. The guest's
//! `commit` sees an offset only once the broker acknowledged that record and
//! every record polled before it from the same stream ([`OffsetTracker`]).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::time::Duration;

use futures::Future;
use tokio::sync::watch;

use super::danube::Danube;
use super::publisher::{Published, Publisher, Sent};
use super::retry::RetryPolicy;
use super::worker::Guest;
use super::{Stop, new_trace_id, outcome_error};
use crate::config::ConnectorConfig;
use crate::contract::{Call, CallOutcome, ConnectorError, Offset, ProducerConfig, SourceRecord};
use crate::operations::Pause;

/// The Danube side of a source: producers (in lanes) and the offset tracker.
/// It outlives worker restarts, so producers stay connected.
pub struct SourcePipeline<'a, D: Danube> {
    config: &'a ConnectorConfig,
    policy: RetryPolicy,
    publisher: Publisher<D>,
    tracker: OffsetTracker,
    /// Records acknowledged by the broker so far.
    acked: u64,
    pause: Pause,
}

type PendingCall<'w> = Pin<
    Box<dyn Future<Output = (u64, Result<CallOutcome, super::worker::WorkerGone>)> + Send + 'w>,
>;

impl<'a, D: Danube> SourcePipeline<'a, D> {
    /// Registers the topics' schemas and creates the producers of every topic
    /// the connector declared.
    pub async fn start(
        danube: &D,
        config: &'a ConnectorConfig,
        policy: RetryPolicy,
        producers: Vec<ProducerConfig>,
        pause: Pause,
    ) -> Result<SourcePipeline<'a, D>, Stop> {
        let publisher = Publisher::start(danube, config, &policy, &producers).await?;
        tracing::info!(connector = %config.host.connector_name, topics = producers.len(), lanes_per_topic = config.host.processing.producers_per_topic, "source pipeline running");
        Ok(SourcePipeline {
            config,
            policy,
            publisher,
            tracker: OffsetTracker::default(),
            pause,
            acked: 0,
        })
    }

    /// Polls `worker` until `shutdown` turns true (then drains: stops polling,
    /// waits for every published record's ack, commits) or something stops the
    /// pipeline. When the worker dies, records already handed to the lanes are
    /// still published; the next worker polls again from the guest's last
    /// commit.
    pub async fn run(
        &mut self,
        worker: &impl Guest,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let result = self.feed(worker, &mut shutdown).await;
        if matches!(result, Err(Stop::WorkerGone(_))) {
            // Let what is in flight land, so the next worker starts from a
            // quiet pipeline; offsets not yet committed are polled again.
            while self.tracker.outstanding() > 0 {
                let Some(done) = self.publisher.next().await else {
                    break;
                };
                self.on_published(done)?;
            }
            self.tracker = OffsetTracker::default();
            self.policy.metrics.set_in_flight(0);
        }
        result
    }

    async fn feed(
        &mut self,
        worker: &impl Guest,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let host = &self.config.host;
        let processing = &host.processing;
        let mut stopping = *shutdown.borrow();
        let mut poll_backoff = self.policy.backoff();
        // The records the pending poll asked for, and the poll itself.
        let mut poll: Option<(u32, PendingCall)> = None;
        let mut commit: Option<(Vec<Offset>, PendingCall)> = None;
        // Commits are paced only while polls come back full: see
        // `[processing] commit_interval_ms`.
        let commit_interval = Duration::from_millis(processing.commit_interval_ms);
        let mut saturated = false;
        let mut last_commit = tokio::time::Instant::now();

        let refill = refill_at(processing.batch_size, processing.max_in_flight);
        loop {
            // Records in flight are bounded by asking the guest for no more
            // than there is room for.
            let room = (processing.max_in_flight as usize)
                .saturating_sub(self.tracker.outstanding())
                .min(processing.batch_size as usize);
            // Paused: no new poll; what was polled is published and
            // committed.
            if poll.is_none() && !stopping && !self.pause.is_paused() && room >= refill {
                let trace_id = new_trace_id();
                let call = Call::Poll {
                    max: room as u32,
                    timeout_ms: processing.poll_interval_ms as u32,
                };
                poll = Some((
                    room as u32,
                    Box::pin(async move { (trace_id, worker.call(trace_id, call).await) }),
                ));
            }
            // A drain paces its commits too, but not the last one.
            let drained = stopping && self.tracker.outstanding() == 0;
            let commit_due = drained || !saturated || last_commit.elapsed() >= commit_interval;
            if commit.is_none()
                && commit_due
                && let Some(offsets) = self.tracker.take_committable()
            {
                last_commit = tokio::time::Instant::now();
                let trace_id = new_trace_id();
                let call = Call::Commit {
                    offsets: offsets.clone(),
                };
                commit = Some((
                    offsets,
                    Box::pin(async move { (trace_id, worker.call(trace_id, call).await) }),
                ));
            }
            if stopping && poll.is_none() && commit.is_none() && self.tracker.outstanding() == 0 {
                return Ok(());
            }

            tokio::select! {
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    tracing::info!(outstanding = self.tracker.outstanding(), "draining: no more polls, waiting for in-flight records");
                }
                _ = self.pause.changed() => {}
                (trace_id, outcome) = async { poll.as_mut().expect("guarded").1.as_mut().await }, if poll.is_some() => {
                    let (asked, _) = poll.take().expect("guarded");
                    match outcome.map_err(|e| Stop::WorkerGone(e.to_string()))? {
                        CallOutcome::Polled(records) => {
                            saturated = records.len() >= asked as usize;
                            if poll_backoff.attempts() > 0 {
                                self.policy.note_recovered();
                            }
                            poll_backoff = self.policy.backoff();
                            self.policy.metrics.batch_size(records.len());
                            if !records.is_empty() {
                                tracing::debug!(trace_id = %format_args!("{trace_id:016x}"), records = records.len(), "polled");
                            }
                            for record in records {
                                self.dispatch(record)?;
                            }
                        }
                        CallOutcome::Error(ConnectorError::Retryable(why)) => {
                            match poll_backoff.next_delay() {
                                Some(delay) => {
                                    self.policy.note_retry("poll", &why);
                                    tracing::warn!(error = %why, retry_in_ms = delay.as_millis() as u64, "poll failed; retrying");
                                    tokio::time::sleep(delay).await;
                                }
                                None => return Err(Stop::Fatal(format!("poll kept failing after {} retries: {why}", host.retry.max_retries))),
                            }
                        }
                        CallOutcome::Error(ConnectorError::InvalidData(why)) => {
                            tracing::warn!(error = %why, "poll reported invalid data; continuing");
                        }
                        other => return Err(outcome_error("poll", other)),
                    }
                }
                (_, outcome) = async { commit.as_mut().expect("guarded").1.as_mut().await }, if commit.is_some() => {
                    let (offsets, _) = commit.take().expect("guarded");
                    match outcome.map_err(|e| Stop::WorkerGone(e.to_string()))? {
                        CallOutcome::Done => tracing::debug!(?offsets, "committed"),
                        CallOutcome::Error(ConnectorError::Retryable(why)) => {
                            self.policy.note_retry("commit", &why);
                            tracing::warn!(error = %why, "commit failed; it is retried with the next one");
                            self.tracker.requeue(offsets);
                        }
                        other => return Err(outcome_error("commit", other)),
                    }
                }
                Some(done) = self.publisher.next() => {
                    self.on_published(done)?;
                    // Those that came meanwhile, in the same turn of the loop.
                    while let Some(done) = self.publisher.try_next() {
                        self.on_published(done)?;
                    }
                }
                // A paced commit falls due.
                _ = tokio::time::sleep_until(last_commit + commit_interval),
                    if commit.is_none() && !commit_due && self.tracker.has_committable() => {}
            }
        }
    }

    /// Hands a polled record to its lane, or to the dead-letter topic when
    /// it does not fit its topic's schema. Either way its offset is committed
    /// only once the broker acknowledged it.
    fn dispatch(&mut self, mut record: SourceRecord) -> Result<(), Stop> {
        let offset = record.offset.take();
        let (id, sent) = self.publisher.send(record)?;
        // Its report is read later, in this task: registering it after
        // the send comes before any acknowledgement.
        self.tracker.push(id, offset);
        self.policy
            .metrics
            .set_in_flight(self.tracker.outstanding());
        if let Sent::Refused { record, why } = sent {
            self.publisher.dead_letter(id, record, why);
        }
        Ok(())
    }

    /// Records acknowledged so far: a worker whose records were acked made
    /// progress.
    pub fn progress(&self) -> u64 {
        self.acked
    }

    fn on_published(&mut self, done: Published) -> Result<(), Stop> {
        match done.result {
            Ok(()) => {
                self.acked += 1;
                self.tracker.ack(done.id);
                self.publisher.count(&done);
                self.policy
                    .metrics
                    .set_in_flight(self.tracker.outstanding());
                Ok(())
            }
            Err(e) => Err(Stop::Fatal(format!(
                "cannot publish to {} after {} retries: {e}; uncommitted records are polled again on restart",
                done.topic, self.config.host.retry.max_retries
            ))),
        }
    }
}

/// The room in the in-flight window at which the next poll is made: a full
/// batch, or half the window when that is smaller. Each poll is a round trip
/// to the worker (two frames, a guest call, its metrics); polling as soon as
/// a few acknowledgements free room would make that cost per record, since
/// a busy source keeps the window full (polls of 1 to 5 records were
/// measured at `max_in_flight` 5,000).
fn refill_at(batch_size: u32, max_in_flight: u32) -> usize {
    batch_size.min(max_in_flight.div_ceil(2)) as usize
}

/// Which offsets may be committed: per stream, the position of the last record
/// such that it and every record polled before it were acknowledged.
///
/// It sees every record twice (published, acknowledged), so stream names are
/// kept once and records refer to them by index: no allocation per record.
/// A stream with nothing left in flight is forgotten once its offset is
/// taken (its slot is reused): a source may name a new stream per file or
/// per session, and what a guest names must not grow the supervisor.
#[derive(Default)]
pub struct OffsetTracker {
    /// The streams with records in flight or an offset to commit, by slot;
    /// a source has a handful.
    streams: Vec<Stream>,
    index: HashMap<String, usize>,
    /// Slots of forgotten streams, for the next new one.
    free: Vec<usize>,
    /// The stream of each record that carries an offset, by record id.
    stream_of: HashMap<u64, usize>,
    outstanding: usize,
}

#[derive(Default)]
struct Stream {
    name: String,
    /// The records not yet committable, in poll order.
    pending: VecDeque<Entry>,
    /// The position to commit next, if any.
    ready: Option<u64>,
}

struct Entry {
    id: u64,
    position: u64,
    acked: bool,
}

impl OffsetTracker {
    /// Registers a published record (ids grow with poll order).
    pub fn push(&mut self, id: u64, offset: Option<Offset>) {
        self.outstanding += 1;
        if let Some(offset) = offset {
            let stream = self.stream(offset.stream);
            self.stream_of.insert(id, stream);
            self.streams[stream].pending.push_back(Entry {
                id,
                position: offset.position,
                acked: false,
            });
        }
    }

    /// The slot of stream `name`, taken for it if it is new.
    fn stream(&mut self, name: String) -> usize {
        if let Some(&slot) = self.index.get(&name) {
            return slot;
        }
        let stream = Stream {
            name: name.clone(),
            ..Stream::default()
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.streams[slot] = stream;
                slot
            }
            None => {
                self.streams.push(stream);
                self.streams.len() - 1
            }
        };
        self.index.insert(name, slot);
        slot
    }

    /// Marks a record acknowledged by the broker.
    pub fn ack(&mut self, id: u64) {
        self.outstanding = self.outstanding.saturating_sub(1);
        let Some(stream) = self.stream_of.remove(&id) else {
            return;
        };
        let stream = &mut self.streams[stream];
        // A stream's ids are consecutive unless other streams' records come
        // between them: then its place is searched for.
        let pending = &mut stream.pending;
        let direct = pending
            .front()
            .and_then(|front| usize::try_from(id.checked_sub(front.id)?).ok())
            .filter(|&i| pending.get(i).is_some_and(|e| e.id == id));
        if let Some(i) = direct.or_else(|| pending.binary_search_by_key(&id, |e| e.id).ok()) {
            pending[i].acked = true;
        }
        while stream.pending.front().is_some_and(|e| e.acked) {
            let e = stream.pending.pop_front().expect("checked");
            stream.ready = Some(e.position);
        }
    }

    /// The offsets ready to commit since the last call, one per stream.
    pub fn take_committable(&mut self) -> Option<Vec<Offset>> {
        let mut offsets = Vec::new();
        for (slot, s) in self.streams.iter_mut().enumerate() {
            let Some(position) = s.ready.take() else {
                continue;
            };
            let stream = match s.pending.is_empty() {
                // Nothing of it in flight any more: forgotten.
                true => {
                    self.index.remove(&s.name);
                    self.free.push(slot);
                    std::mem::take(&mut s.name)
                }
                false => s.name.clone(),
            };
            offsets.push(Offset { stream, position });
        }
        (!offsets.is_empty()).then_some(offsets)
    }

    /// Whether any offset waits to be committed.
    pub fn has_committable(&self) -> bool {
        self.streams.iter().any(|s| s.ready.is_some())
    }

    /// Puts back offsets whose commit failed (newer ones win).
    pub fn requeue(&mut self, offsets: Vec<Offset>) {
        for o in offsets {
            let stream = self.stream(o.stream);
            let ready = &mut self.streams[stream].ready;
            *ready = Some(ready.map_or(o.position, |r| r.max(o.position)));
        }
    }

    /// Records published and not yet acknowledged.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn off(stream: &str, position: u64) -> Option<Offset> {
        Some(Offset {
            stream: stream.into(),
            position,
        })
    }

    #[test]
    fn commits_only_the_acked_prefix_of_each_stream() {
        let mut t = OffsetTracker::default();
        t.push(0, off("a", 10));
        t.push(1, off("b", 5));
        t.push(2, off("a", 11));
        t.push(3, None);
        t.push(4, off("a", 12));
        t.ack(2);
        t.ack(4);
        assert_eq!(t.take_committable(), None, "a:10 is not acked yet");
        t.ack(0);
        assert_eq!(
            t.take_committable(),
            Some(vec![Offset {
                stream: "a".into(),
                position: 12
            }])
        );
        t.ack(1);
        t.ack(3);
        assert_eq!(
            t.take_committable(),
            Some(vec![Offset {
                stream: "b".into(),
                position: 5
            }])
        );
        assert_eq!(t.outstanding(), 0);
    }

    /// A stream per record (a hostile or a file-per-stream source) does not
    /// grow the tracker: a stream is forgotten once committed with nothing
    /// in flight, and its slot serves the next.
    #[test]
    fn finished_streams_are_forgotten() {
        let mut t = OffsetTracker::default();
        for id in 0..1000 {
            t.push(id, off(&format!("s{id}"), 1));
            t.ack(id);
            assert_eq!(
                t.take_committable(),
                Some(vec![Offset {
                    stream: format!("s{id}"),
                    position: 1
                }])
            );
        }
        assert_eq!(t.streams.len(), 1);
        assert!(t.index.is_empty());
        // One still in flight stays known beside one that finished.
        t.push(1000, off("a", 1));
        t.push(1001, off("b", 1));
        t.push(1002, off("a", 2));
        t.ack(1000);
        t.ack(1001);
        assert_eq!(t.take_committable().unwrap().len(), 2);
        assert_eq!(t.index.keys().collect::<Vec<_>>(), ["a"]);
        t.ack(1002);
        assert_eq!(
            t.take_committable(),
            Some(vec![Offset {
                stream: "a".into(),
                position: 2
            }])
        );
    }

    #[test]
    fn requeued_offsets_merge_with_newer_ones() {
        let mut t = OffsetTracker::default();
        t.push(0, off("a", 1));
        t.ack(0);
        let first = t.take_committable().unwrap();
        t.push(1, off("a", 2));
        t.ack(1);
        t.requeue(first);
        assert_eq!(
            t.take_committable(),
            Some(vec![Offset {
                stream: "a".into(),
                position: 2
            }])
        );
    }
    // The polling loop on a scripted guest and a broker in memory, on
    // virtual time: in-flight bounds, commit order, the drain, and what a
    // worker death leaves behind.

    use std::sync::Mutex;

    use crate::supervisor::test_doubles::{
        Answer, MemoryBroker, ScriptedGuest, test_config, test_policy, until,
    };

    const TOPIC: &str = "/default/out";

    async fn start(tables: &str) -> (MemoryBroker, SourcePipeline<'static, MemoryBroker>) {
        let broker = MemoryBroker::new().await;
        let config = test_config(tables);
        let producer = ProducerConfig {
            topic: TOPIC.into(),
            partitions: 0,
            reliable: true,
            schema_subject: None,
        };
        let pipeline = SourcePipeline::start(
            &broker,
            config,
            test_policy(config).0,
            vec![producer],
            Pause::never(),
        )
        .await
        .unwrap_or_else(|_| panic!("the pipeline starts"));
        (broker, pipeline)
    }

    fn record(position: u64) -> SourceRecord {
        SourceRecord {
            topic: TOPIC.into(),
            payload: position.to_string().into_bytes(),
            attributes: Vec::new(),
            key: None,
            offset: Some(Offset {
                stream: "s".into(),
                position,
            }),
        }
    }

    /// What a scripted source saw: every poll's `max`, every commit, and
    /// the records it produced.
    #[derive(Default)]
    struct Seen {
        polls: Vec<u32>,
        /// (committed position, records the broker held at that moment).
        commits: Vec<(u64, usize)>,
        produced: u64,
    }

    /// A source of `total` records that answers polls with as many as it is
    /// asked for; it dies on the poll after `die_after` records, if given.
    fn source(
        broker: &MemoryBroker,
        seen: &Arc<Mutex<Seen>>,
        total: u64,
        die_after: Option<u64>,
    ) -> ScriptedGuest {
        let (broker, seen) = (broker.clone(), seen.clone());
        ScriptedGuest::new(move |call| {
            let mut seen = seen.lock().unwrap();
            match call {
                Call::Poll { max, .. } => {
                    if die_after.is_some_and(|n| seen.produced >= n) {
                        return Answer::Die;
                    }
                    seen.polls.push(*max);
                    let from = seen.produced;
                    let to = (from + u64::from(*max)).min(total);
                    seen.produced = to;
                    Answer::Outcome(CallOutcome::Polled((from..to).map(record).collect()))
                }
                Call::Commit { offsets } => {
                    let held = broker.published(TOPIC).len();
                    seen.commits.push((offsets[0].position, held));
                    Answer::Outcome(CallOutcome::Done)
                }
                other => panic!("a source was called with {}", other.kind()),
            }
        })
        // A poll with nothing to return takes time in a real guest (up to
        // its timeout); answered at once, polls would spin without letting
        // virtual time advance.
        .with_latency(Duration::from_millis(1))
    }

    /// Runs the pipeline on `guest` until the broker holds `count` records,
    /// then drains it.
    async fn run_until_published(
        pipeline: &mut SourcePipeline<'static, MemoryBroker>,
        broker: &MemoryBroker,
        guest: &ScriptedGuest,
        count: usize,
    ) {
        let (shutdown, watching) = watch::channel(false);
        let drive = async {
            until(|| broker.published(TOPIC).len() >= count).await;
            shutdown.send_replace(true);
        };
        let (result, ()) = tokio::join!(pipeline.run(guest, watching), drive);
        result.unwrap_or_else(|e| panic!("{e}"));
    }

    /// With a slow broker, the guest is never asked for more than
    /// `max_in_flight` allows; each lane has one send at a time; commits
    /// only ever name records the broker holds, in order; a drain publishes
    /// and commits everything polled.
    #[tokio::test(start_paused = true)]
    async fn polls_stay_within_max_in_flight_and_commits_follow_the_broker() {
        let (broker, mut pipeline) =
            start("[processing]\nbatch_size = 5\nmax_in_flight = 8\nproducers_per_topic = 2\n")
                .await;
        broker.set_send_latency(Duration::from_millis(20));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let guest = source(&broker, &seen, 60, None);
        run_until_published(&mut pipeline, &broker, &guest, 30).await;

        let seen = seen.lock().unwrap();
        let polled = seen.produced as usize;
        assert!(polled >= 30, "{polled}");
        assert!(
            seen.polls.iter().all(|&max| (1..=5).contains(&max)),
            "{:?}",
            seen.polls
        );
        assert!(
            seen.polls.iter().any(|&max| max < 5),
            "a full window shrinks the poll: {:?}",
            seen.polls
        );
        assert_eq!(broker.most_sends_at_once(), 2, "one send per lane");
        // The drain published everything polled and committed the last.
        assert_eq!(broker.published(TOPIC).len(), polled);
        let positions: Vec<u64> = seen.commits.iter().map(|c| c.0).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        assert_eq!(positions.last(), Some(&(polled as u64 - 1)));
        for &(position, held) in &seen.commits {
            assert!(
                held as u64 > position,
                "committed {position} while the broker held {held} records"
            );
        }
    }

    /// A busy source keeps the window full; it is polled again once a whole
    /// batch fits, not for the few records each acknowledgement frees.
    #[tokio::test(start_paused = true)]
    async fn a_full_window_is_refilled_a_batch_at_a_time() {
        let (broker, mut pipeline) =
            start("[processing]\nbatch_size = 10\nmax_in_flight = 40\nproducers_per_topic = 2\n")
                .await;
        broker.set_send_latency(Duration::from_millis(5));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let guest = source(&broker, &seen, 1_000, None);
        run_until_published(&mut pipeline, &broker, &guest, 200).await;

        let seen = seen.lock().unwrap();
        assert!(seen.polls.len() >= 20, "{:?}", seen.polls);
        assert!(seen.polls.iter().all(|&max| max == 10), "{:?}", seen.polls);
        assert_eq!(broker.published(TOPIC).len() as u64, seen.produced);
    }

    /// While polls come back full, commits come at most every
    /// `commit_interval_ms`; a source that returns fewer records than asked
    /// gets its commit as soon as the broker acknowledged them.
    #[tokio::test(start_paused = true)]
    async fn commits_are_paced_only_while_polls_come_back_full() {
        let commit_times = |total: u64, until_published: usize, batch_size: u32| async move {
            let (broker, mut pipeline) = start(&format!(
                "[processing]\nbatch_size = {batch_size}\nmax_in_flight = 10000\ncommit_interval_ms = 100\n"
            ))
            .await;
            broker.set_send_latency(Duration::from_millis(1));
            let began = tokio::time::Instant::now();
            let times = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::new(Mutex::new(0u64));
            // Returns at most 7 records per poll, `total` in all.
            let guest = ScriptedGuest::new({
                let (times, seen) = (times.clone(), seen.clone());
                move |call| match call {
                    Call::Poll { max, .. } => {
                        let mut seen = seen.lock().unwrap();
                        let from = *seen;
                        let to = (from + u64::from(*max).min(7)).min(total);
                        *seen = to;
                        Answer::Outcome(CallOutcome::Polled((from..to).map(record).collect()))
                    }
                    Call::Commit { .. } => {
                        times
                            .lock()
                            .unwrap()
                            .push(began.elapsed().as_millis() as u64);
                        Answer::Outcome(CallOutcome::Done)
                    }
                    other => panic!("{}", other.kind()),
                }
            })
            .with_latency(Duration::from_millis(1));
            run_until_published(&mut pipeline, &broker, &guest, until_published).await;
            times.lock().unwrap().clone()
        };
        // Asked for 7 at a time and always returning 7: saturated until the
        // drain.
        let paced = commit_times(u64::MAX, 2_000, 7).await;
        let gaps: Vec<u64> = paced.windows(2).map(|w| w[1] - w[0]).collect();
        // The last commit is the drain's, which is not paced.
        // (Seen by the guest, a commit may wait a 1 ms poll out.)
        let paced_gaps = &gaps[..gaps.len() - 1];
        assert!(
            paced_gaps.iter().all(|&g| (98..=103).contains(&g)),
            "{paced:?}"
        );
        // Asked for 50 and returning 7: commits follow the acknowledgements.
        let prompt = commit_times(2_000, 2_000, 50).await;
        assert!(
            prompt.len() > 5 * paced.len(),
            "{} vs {}",
            prompt.len(),
            paced.len()
        );
    }

    /// When the worker dies, what it had polled is still published before
    /// the pipeline reports the death; the next worker resumes from the
    /// last commit, so nothing is lost.
    #[tokio::test(start_paused = true)]
    async fn a_worker_death_leaves_nothing_unpublished() {
        let (broker, mut pipeline) =
            start("[processing]\nbatch_size = 10\nproducers_per_topic = 1\n").await;
        broker.set_send_latency(Duration::from_millis(5));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let dying = source(&broker, &seen, 1_000, Some(30));
        let (_shutdown, watching) = watch::channel(false);
        match pipeline.run(&dying, watching).await {
            Err(Stop::WorkerGone(_)) => {}
            other => panic!("expected the worker's death, got {other:?}"),
        }
        let polled = seen.lock().unwrap().produced as usize;
        assert_eq!(polled, 30);
        assert_eq!(broker.published(TOPIC).len(), polled);
        assert_eq!(pipeline.progress(), polled as u64);
    }

    /// A broker that fails sends for a while is waited out: every record
    /// arrives once, in order on its lane.
    #[tokio::test(start_paused = true)]
    async fn failed_sends_are_retried_in_order() {
        let (broker, mut pipeline) =
            start("[processing]\nbatch_size = 10\nproducers_per_topic = 1\n").await;
        broker.fail_sends(3);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let guest = source(&broker, &seen, 20, None);
        run_until_published(&mut pipeline, &broker, &guest, 20).await;
        let published: Vec<String> = broker
            .published(TOPIC)
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let expected: Vec<String> = (0..20).map(|i: u64| i.to_string()).collect();
        assert_eq!(published, expected);
        assert_eq!(seen.lock().unwrap().commits.last().map(|c| c.0), Some(19));
    }
}
