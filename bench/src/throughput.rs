//! Scenarios 1 and 2: records through the host beside the raw client.
//!
//! Source: datagen-source → host → broker, against raw producers publishing
//! the same records. Sink: a backlog drained by the host into a discarding
//! guest (the probe fixture without `write_to`), against a raw consumer that
//! acknowledges each message.

use std::time::{Duration, Instant};

use crate::host::{HostProcess, Rss};
use crate::report::{Table, mb_per_s, ratio};
use crate::{Env, raw};

/// Records per second of one run, and the memory it took.
pub struct Flow {
    pub records_per_s: f64,
    pub peak: Rss,
    /// One second after the last record.
    pub idle: Rss,
}

/// The host's memory in each run, named, for the memory table.
pub type Memory = Vec<(String, Flow)>;

pub fn source(env: &Env, memory: &mut Memory) -> anyhow::Result<Table> {
    let records = env.scale(2_000, 20_000);
    let producers = crate::HOST_PRODUCERS_PER_TOPIC;
    let mut table = Table::new(
        "Source: datagen-source → host → broker",
        format!(
            "{records} records per row; the host publishes through {producers} parallel producers \
             (`producers_per_topic`, its default); the raw client sends the same datagen records \
             with {producers} producers, and with one. Rates run from the first acknowledgement \
             to the last, for both."
        ),
        &[
            "payload",
            "host rec/s",
            "host MB/s",
            "raw ×4 rec/s",
            "host / raw ×4",
            "raw ×1 rec/s",
            "host / raw ×1",
        ],
    );
    for size in [100, 1024] {
        let host = host_source(env, size, records)?;
        let topic = env.topic(&format!("src-raw4-{size}"));
        let many = env.block_on(raw::produce(
            &env.broker.url,
            &topic,
            producers,
            records,
            size,
        ))?;
        let topic = env.topic(&format!("src-raw1-{size}"));
        let one = env.block_on(raw::produce(&env.broker.url, &topic, 1, records, size))?;
        table.row([
            format!("{size} B"),
            format!("{:.0}", host.records_per_s),
            mb_per_s(host.records_per_s, size),
            format!("{many:.0}"),
            ratio(host.records_per_s, many),
            format!("{one:.0}"),
            ratio(host.records_per_s, one),
        ]);
        memory.push((format!("source, {size} B"), host));
    }
    Ok(table)
}

fn host_source(env: &Env, size: usize, records: u64) -> anyhow::Result<Flow> {
    let topic = env.topic(&format!("src-host-{size}"));
    let mut host = HostProcess::start(
        env,
        &env.paths.guest("datagen-source")?,
        &format!("bench-source-{size}"),
        &env.cache,
        "",
        &format!("[datagen]\ntopics = [\"{topic}\"]\ncount = {records}\npayload_size = {size}\n"),
    )?;
    let flow = measure(&mut host, records, HostProcess::sent)?;
    host.stop()?;
    Ok(flow)
}

pub fn sink(env: &Env, memory: &mut Memory) -> anyhow::Result<Table> {
    let records = env.scale(2_000, 10_000);
    let mut table = Table::new(
        "Sink: broker → host → discarding guest",
        format!(
            "A backlog of {records} records per row is drained from a shared subscription; the host \
             hands them to the probe guest, which discards them, and acknowledges each; the raw \
             client receives and acknowledges each. The broker lets 10 unacknowledged messages out \
             per subscription (Danube's default), so acknowledgement round trips set the pace; with \
             `linger_ms` = 0 (the default) the host hands a batch on once nothing more is waiting, \
             with 5 it also waits for a message that cannot come before it hands on each window."
        ),
        &[
            "payload",
            "host linger_ms",
            "host rec/s",
            "host MB/s",
            "raw rec/s",
            "host / raw",
        ],
    );
    for size in [100, 1024] {
        let topic = env.topic(&format!("sink-raw-{size}"));
        let raw = env.block_on(async {
            backlog(env, &topic, records, size).await?;
            let client = raw::client(&env.broker.url).await?;
            let consumer = raw::consumer(&client, &topic, SUBSCRIPTION).await?;
            raw::consume(consumer, records).await
        })?;
        for linger_ms in [0, 5] {
            let flow = host_sink(env, size, records, linger_ms)?;
            table.row([
                format!("{size} B"),
                format!(
                    "{linger_ms}{}",
                    if linger_ms == 0 { " (default)" } else { "" }
                ),
                format!("{:.0}", flow.records_per_s),
                mb_per_s(flow.records_per_s, size),
                format!("{raw:.0}"),
                ratio(flow.records_per_s, raw),
            ]);
            if linger_ms == 0 {
                memory.push((format!("sink, {size} B"), flow));
            }
        }
    }
    Ok(table)
}

fn host_sink(env: &Env, size: usize, records: u64, linger_ms: u64) -> anyhow::Result<Flow> {
    let topic = env.topic(&format!("sink-host-{size}-{linger_ms}"));
    env.block_on(backlog(env, &topic, records, size))?;
    let mut host = HostProcess::start(
        env,
        &env.paths.guest("probe-connector")?,
        &format!("bench-sink-{size}-{linger_ms}"),
        &env.cache,
        "",
        &format!(
            "[processing]\nlinger_ms = {linger_ms}\n\n\
             [probe]\ntopic = \"{topic}\"\nsubscription = \"{SUBSCRIPTION}\"\n"
        ),
    )?;
    let flow = measure(&mut host, records, HostProcess::sent)?;
    host.stop()?;
    Ok(flow)
}

const SUBSCRIPTION: &str = "bench";

/// Creates the subscription (so it keeps what follows), leaves it, and
/// publishes `records` records for it to drain.
async fn backlog(env: &Env, topic: &str, records: u64, size: usize) -> anyhow::Result<()> {
    let client = raw::client(&env.broker.url).await?;
    drop(raw::producer(&client, topic, "bench-backlog-topic").await?);
    raw::consumer(&client, topic, SUBSCRIPTION)
        .await?
        .close()
        .await;
    raw::produce(
        &env.broker.url,
        topic,
        crate::HOST_PRODUCERS_PER_TOPIC,
        records,
        size,
    )
    .await?;
    Ok(())
}

/// Follows `count` every 5 ms until it reaches `target`: the rate is taken
/// from the first record counted to the last, so start-up is left out.
/// Memory is sampled throughout, then once more after a second of rest.
fn measure(
    host: &mut HostProcess,
    target: u64,
    count: fn(&HostProcess) -> u64,
) -> anyhow::Result<Flow> {
    let mut first: Option<(Instant, u64)> = None;
    let mut peak = Rss::default();
    host.wait_for(Duration::from_secs(120), "done", |h| {
        std::thread::sleep(Duration::from_millis(4));
        let n = count(h);
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        peak = peak.max(h.rss());
        n >= target
    })?;
    let (started, counted) = first.expect("the wait ended with records counted");
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    Ok(Flow {
        records_per_s: (target - counted) as f64 / elapsed.as_secs_f64(),
        peak,
        idle: host.rss(),
    })
}

/// Scenario 5: resident memory (`VmRSS`) of the supervisor and the worker,
/// at the peak of each run and a second after it ended.
pub fn memory_table(memory: &Memory) -> Table {
    let mut table = Table::new(
        "Memory (VmRSS, MiB)",
        "Sampled from /proc/PID/status every 5 ms during the throughput runs above (peak) and one \
         second after the last record (idle)."
            .into(),
        &[
            "run",
            "supervisor idle",
            "worker idle",
            "supervisor peak",
            "worker peak",
        ],
    );
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    for (run, flow) in memory {
        table.row([
            run.clone(),
            mib(flow.idle.supervisor_kib),
            mib(flow.idle.worker_kib),
            mib(flow.peak.supervisor_kib),
            mib(flow.peak.worker_kib),
        ]);
    }
    table
}
