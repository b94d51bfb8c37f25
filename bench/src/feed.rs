//! The sink scenario's producer: publishes datagen records to a topic that a
//! consumer (the host, or the raw client) is subscribed to, never more than
//! [`WINDOW`] records ahead of what that consumer has acknowledged.
//!
//! The real broker loses messages for good when a reliable subscription
//! falls more than 256 messages behind its producers (its WAL's broadcast
//! channel holds 256 entries), so a backlog of thousands cannot be drained
//! there. Paced by the consumer, the feed keeps the subscription within the
//! window, and as long as the feed outruns the consumer, the rate measured
//! is the consumer's own.
//!
//! The feeder runs on a thread of its own with a current-thread runtime, so
//! that its CPU time can be told apart from the raw consumer's in the same
//! process.

use std::collections::HashMap;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::{cpu, raw};

/// The feed's producers: enough to keep a consumer busy on both brokers
/// (the consumers' rates are a quarter of one source lane's at most).
pub const PRODUCERS: usize = 4;

/// Records published and not yet acknowledged by the consumer, at most:
/// below the real broker's 256, with room for one send in flight per
/// producer.
pub const WINDOW: u64 = 200;

/// Below this many records published and not yet acknowledged, the
/// consumer may be waiting for the feed: the brokers let 10 unacknowledged
/// messages out per subscription.
const STARVED_BELOW: u64 = 10;

/// What the feeder saw.
pub struct Fed {
    /// The share of the feed's time (sampled every millisecond) in which the
    /// consumer had fewer than [`STARVED_BELOW`] records published and
    /// unacknowledged: near 0, the consumer set the pace; the larger, the
    /// more the feed held it back and its rate is a floor.
    pub starved: f64,
}

pub struct Feeder {
    thread: JoinHandle<anyhow::Result<Fed>>,
    stop: Arc<AtomicBool>,
}

impl Feeder {
    /// Starts publishing `records` records of `size` bytes to `topic`
    /// through [`PRODUCERS`] producers, at most [`WINDOW`] ahead of `consumed`;
    /// gives up after `limit`, or when finished.
    pub fn start(
        url: &str,
        topic: &str,
        records: u64,
        size: usize,
        consumed: Arc<AtomicU64>,
        limit: Duration,
    ) -> anyhow::Result<Feeder> {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, topic, stopped) = (url.to_string(), topic.to_string(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bench-feeder".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let gauge = Gauge::default();
                let fed = runtime.block_on(async {
                    let feed = feed(&url, &topic, records, size, &consumed, &stopped, &gauge);
                    let stop = async {
                        while !stopped.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    tokio::select! {
                        // Timed out or stopped: what was fed so far.
                        fed = tokio::time::timeout(limit, feed) => fed.unwrap_or(Ok(())),
                        () = stop => Ok(()),
                    }
                });
                let fed = fed.map(|()| gauge.fed());
                // Stays alive (its CPU clock readable) until told to stop.
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                fed
            })
            .context("cannot start the feeder thread")?;
        Ok(Feeder { thread, stop })
    }

    /// A function reading the feeder thread's CPU time so far (while the
    /// feeder is not finished), for another thread.
    pub fn cpu_reader(&self) -> impl Fn() -> Option<Duration> + Send + Sync + 'static {
        let handle = self.thread.as_pthread_t() as usize;
        move || cpu::thread(handle as libc::pthread_t)
    }

    /// Stops the feed (if it still runs) and says what it did.
    pub fn finish(self) -> anyhow::Result<Fed> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the feeder thread panicked"))?
    }
}

/// Samples of the consumer's lag behind the feed.
#[derive(Default)]
struct Gauge {
    published: AtomicU64,
    samples: AtomicU64,
    starved: AtomicU64,
}

impl Gauge {
    fn fed(&self) -> Fed {
        Fed {
            starved: self.starved.load(Ordering::Relaxed) as f64
                / self.samples.load(Ordering::Relaxed).max(1) as f64,
        }
    }

    /// Every millisecond until every record is published: is the consumer
    /// short of records?
    async fn sample(&self, records: u64, consumed: &AtomicU64) {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        loop {
            tick.tick().await;
            let published = self.published.load(Ordering::Relaxed);
            if published >= records {
                return;
            }
            self.samples.fetch_add(1, Ordering::Relaxed);
            if published < consumed.load(Ordering::Relaxed) + STARVED_BELOW {
                self.starved.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn feed(
    url: &str,
    topic: &str,
    records: u64,
    size: usize,
    consumed: &AtomicU64,
    stop: &AtomicBool,
    gauge: &Gauge,
) -> anyhow::Result<()> {
    let client = raw::client(url).await?;
    let mut created = Vec::new();
    for i in 0..PRODUCERS {
        created.push(raw::producer(&client, topic, &format!("bench-feed-{i}")).await?);
    }
    let issued = AtomicU64::new(0);
    let sends = created.into_iter().map(|producer| {
        let issued = &issued;
        async move {
            loop {
                while issued.load(Ordering::Relaxed) >= consumed.load(Ordering::Relaxed) + WINDOW {
                    if stop.load(Ordering::Relaxed) {
                        return anyhow::Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let seq = issued.fetch_add(1, Ordering::Relaxed);
                if seq >= records || stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let attributes = HashMap::from([("seq".to_string(), seq.to_string())]);
                producer
                    .send(raw::datagen_payload(seq, topic, size), Some(attributes))
                    .await?;
                gauge.published.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let (sent, ()) = tokio::join!(
        futures::future::join_all(sends),
        gauge.sample(records, consumed)
    );
    for sent in sent {
        sent?;
    }
    Ok(())
}
