//! The baseline: the raw `danube-client`, driven as directly as it can be.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use danube_client::{Consumer, DanubeClient, Producer, SubType};

use crate::bound::{Limits, Outcome, Progress};
use crate::cpu;

pub async fn client(url: &str) -> anyhow::Result<DanubeClient> {
    DanubeClient::builder()
        .service_url(url)
        .build()
        .await
        .with_context(|| format!("cannot build a client for {url}"))
}

/// A created reliable producer (this also creates the topic).
pub async fn producer(client: &DanubeClient, topic: &str, name: &str) -> anyhow::Result<Producer> {
    let mut producer = client
        .new_producer()
        .with_topic(topic)
        .with_name(name)
        .with_reliable_dispatch()
        .build()?;
    producer
        .create()
        .await
        .with_context(|| format!("cannot create a producer on {topic}"))?;
    Ok(producer)
}

/// A shared subscription (the sinks' default), subscribed from now on.
pub async fn consumer(
    client: &DanubeClient,
    topic: &str,
    subscription: &str,
) -> anyhow::Result<Consumer> {
    let mut consumer = client
        .new_consumer()
        .with_topic(topic)
        .with_consumer_name(format!("{subscription}-raw"))
        .with_subscription(subscription)
        .with_subscription_type(SubType::Shared)
        .build()?;
    consumer
        .subscribe()
        .await
        .with_context(|| format!("cannot subscribe to {topic}"))?;
    Ok(consumer)
}

/// A datagen-source record: `{"seq":N,"key":null,"topic":T,"pad":"xx…"}`
/// padded to `size` bytes, as the connector makes it.
pub fn datagen_payload(seq: u64, topic: &str, size: usize) -> Vec<u8> {
    let bare = format!("{{\"seq\":{seq},\"key\":null,\"topic\":\"{topic}\",\"pad\":\"\"}}");
    let pad = "x".repeat(size.saturating_sub(bare.len()));
    format!("{{\"seq\":{seq},\"key\":null,\"topic\":\"{topic}\",\"pad\":\"{pad}\"}}").into_bytes()
}

/// A rate and, where it was measured, the CPU time per record.
#[derive(Clone, Copy)]
pub struct Measured {
    pub records_per_s: f64,
    /// Microseconds of CPU per record.
    pub cpu_us: Option<f64>,
}

/// Publishes `records` datagen records of `size` bytes to `topic` through
/// `producers` producers sending in parallel (each awaits its own sends, as
/// the client allows one in flight per producer). Rate and CPU time (this
/// process's) run from the first acknowledgement to the last, as the host's
/// are taken; unfinished when the acknowledgements stop coming.
pub async fn produce(
    url: &str,
    topic: &str,
    producers: usize,
    records: u64,
    size: usize,
    limits: Limits,
) -> anyhow::Result<Outcome<Measured>> {
    let client = client(url).await?;
    let mut created = Vec::new();
    for i in 0..producers {
        created.push(producer(&client, topic, &format!("bench-raw-{i}")).await?);
    }
    let first_ack = Arc::new(OnceLock::new());
    let acked = Arc::new(AtomicU64::new(0));
    let mut sends = tokio::task::JoinSet::new();
    for (i, producer) in created.into_iter().enumerate() {
        let topic = topic.to_string();
        let (first_ack, acked) = (first_ack.clone(), acked.clone());
        sends.spawn(async move {
            let mut seq = i as u64;
            while seq < records {
                let attributes = HashMap::from([("seq".to_string(), seq.to_string())]);
                producer
                    .send(datagen_payload(seq, &topic, size), Some(attributes))
                    .await?;
                first_ack.get_or_init(|| (Instant::now(), cpu::this_process()));
                acked.fetch_add(1, Ordering::Relaxed);
                seq += producers as u64;
            }
            anyhow::Ok(())
        });
    }
    let mut progress = Progress::new(records, limits);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    loop {
        tokio::select! {
            joined = sends.join_next() => match joined {
                Some(sent) => sent??,
                None => break,
            },
            _ = tick.tick() => {
                if let Some(unfinished) = progress.check(acked.load(Ordering::Relaxed)) {
                    sends.abort_all();
                    return Ok(Outcome::Unfinished(unfinished));
                }
            }
        }
    }
    let (at, cpu) = first_ack.get().context("nothing was sent")?;
    Ok(Outcome::Done(Measured {
        records_per_s: (records - 1) as f64 / at.elapsed().as_secs_f64(),
        cpu_us: Some(cpu::per_record(
            cpu::this_process().saturating_sub(*cpu),
            records - 1,
        )),
    }))
}

/// Receives and acknowledges `records` messages, one ack per message as a
/// sink must, counting them in `consumed`. Rate and CPU time run from the
/// first acknowledgement to the last; the CPU time is this process's less
/// `others` (the feeder's thread). Unfinished when messages stop coming.
pub async fn consume(
    mut consumer: Consumer,
    records: u64,
    consumed: &AtomicU64,
    others: impl Fn() -> Option<Duration>,
    limits: Limits,
) -> anyhow::Result<Outcome<Measured>> {
    let cpu_now = || Some(cpu::this_process().saturating_sub(others()?));
    let mut messages = consumer.receive().await?;
    let mut first_ack = None;
    let mut progress = Progress::new(records, limits);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut count = 0;
    while count < records {
        tokio::select! {
            message = messages.recv() => {
                let message = message.context("the consumer's stream ended")?;
                let Ok(acked) = tokio::time::timeout(limits.quiet, consumer.ack(&message)).await
                else {
                    return Ok(Outcome::Unfinished(progress.give_up(count)));
                };
                acked?;
                count += 1;
                consumed.store(count, Ordering::Relaxed);
                first_ack.get_or_insert_with(|| (Instant::now(), cpu_now()));
            }
            _ = tick.tick() => {
                if let Some(unfinished) = progress.check(count) {
                    consumer.close().await;
                    return Ok(Outcome::Unfinished(unfinished));
                }
            }
        }
    }
    let (at, cpu) = first_ack.context("nothing was received")?;
    let elapsed = at.elapsed();
    let cpu_us = cpu
        .zip(cpu_now())
        .map(|(start, end)| cpu::per_record(end.saturating_sub(start), records - 1));
    consumer.close().await;
    Ok(Outcome::Done(Measured {
        records_per_s: (records - 1) as f64 / elapsed.as_secs_f64(),
        cpu_us,
    }))
}
