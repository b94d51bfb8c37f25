//! The baseline: the raw `danube-client`, driven as directly as it can be.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use danube_client::{Consumer, DanubeClient, Producer, SubType};

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

/// Publishes `records` datagen records of `size` bytes to `topic` through
/// `producers` producers sending in parallel (each awaits its own sends, as
/// the client allows one in flight per producer). Returns records per second
/// from the first acknowledgement to the last, as the host's rate is taken.
pub async fn produce(
    url: &str,
    topic: &str,
    producers: usize,
    records: u64,
    size: usize,
) -> anyhow::Result<f64> {
    let client = client(url).await?;
    let mut created = Vec::new();
    for i in 0..producers {
        created.push(producer(&client, topic, &format!("bench-raw-{i}")).await?);
    }
    let first_ack = Arc::new(OnceLock::new());
    let sends = created.into_iter().enumerate().map(|(i, producer)| {
        let topic = topic.to_string();
        let first_ack = first_ack.clone();
        tokio::spawn(async move {
            let mut seq = i as u64;
            while seq < records {
                let attributes = HashMap::from([("seq".to_string(), seq.to_string())]);
                producer
                    .send(datagen_payload(seq, &topic, size), Some(attributes))
                    .await?;
                first_ack.get_or_init(Instant::now);
                seq += producers as u64;
            }
            anyhow::Ok(())
        })
    });
    for send in futures::future::join_all(sends).await {
        send??;
    }
    let first_ack = first_ack.get().context("nothing was sent")?;
    Ok((records - 1) as f64 / first_ack.elapsed().as_secs_f64())
}

/// Receives and acknowledges `records` messages, one ack per message as a
/// sink must. Returns records per second from the first acknowledgement to
/// the last.
pub async fn consume(mut consumer: Consumer, records: u64) -> anyhow::Result<f64> {
    let mut messages = consumer.receive().await?;
    let mut first_ack = None;
    for _ in 0..records {
        let message = tokio::time::timeout(Duration::from_secs(30), messages.recv())
            .await
            .context("no message for 30 s")?
            .context("the consumer's stream ended")?;
        consumer.ack(&message).await?;
        first_ack.get_or_insert_with(Instant::now);
    }
    consumer.close().await;
    let first_ack = first_ack.context("nothing was received")?;
    Ok((records - 1) as f64 / first_ack.elapsed().as_secs_f64())
}
