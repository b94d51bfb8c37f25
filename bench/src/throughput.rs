//! Scenarios 1 and 2: records through the host beside the raw client, on
//! the same broker in the same run.
//!
//! Source: datagen-source → host → broker, against raw producers publishing
//! the same records. Sink: the host draining a subscription into a
//! discarding guest (the probe fixture without `write_to`), against a raw
//! consumer that acknowledges each message; both fed by the same paced
//! producer ([`crate::feed`]), which the real broker needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bound::{Limits, Outcome, Progress};
use crate::feed::{self, Feeder};
use crate::host::{HostProcess, Rss};
use crate::raw::Measured;
use crate::report::{Table, ratio};
use crate::{Env, cpu, raw};

/// One host run: its rate and CPU, and the memory it took.
pub struct Flow {
    pub measured: Measured,
    pub peak: Rss,
    /// One second after the last record.
    pub idle: Rss,
}

/// The host's memory in each run, named, for the memory table.
pub type Memory = Vec<(String, Flow)>;

pub fn source_table(env: &Env) -> Table {
    let records = env.scale(2_000, 20_000);
    let producers = crate::HOST_PRODUCERS_PER_TOPIC;
    let many = format!("raw ×{producers}");
    Table::new(
        "Source: datagen-source → host → broker",
        format!(
            "{records} records per row, to a topic without subscriptions; the host publishes \
             through {producers} parallel producers (`producers_per_topic`, its default); the raw \
             client sends the same datagen records with {producers} producers, with \
             {FEWER_PRODUCERS} and with one. Rates and CPU time run from the first \
             acknowledgement to the last, for both. CPU: µs of CPU time per record, the host's \
             supervisor and worker together against the raw client's process (the bench, which \
             does nothing else meanwhile)."
        ),
        &[
            "broker",
            "payload",
            "host rec/s",
            &format!("{many} rec/s"),
            &format!("host / {many}"),
            &format!("raw ×{FEWER_PRODUCERS} rec/s"),
            &format!("host / raw ×{FEWER_PRODUCERS}"),
            "raw ×1 rec/s",
            "host / raw ×1",
            "host CPU µs/rec",
            &format!("{many} CPU µs/rec"),
            &format!("CPU host / {many}"),
        ],
    )
}

/// The raw client's middle baseline in the source table: four producers,
/// the baseline the source's targets were first set against.
const FEWER_PRODUCERS: usize = 4;

pub fn source(env: &Env, table: &mut Table, memory: &mut Memory) -> anyhow::Result<()> {
    let records = env.scale(2_000, 20_000);
    let producers = crate::HOST_PRODUCERS_PER_TOPIC;
    for round in 1..=env.repeat {
        for size in [100, 1024] {
            let run = format!("source {size} B");
            let host = host_source(env, size, records, round)?;
            let produce = |n: usize| {
                let topic = env.topic(&format!("src-raw{n}-{size}-{round}"));
                env.block_on_within(
                    env.limits().total + Duration::from_secs(30),
                    raw::produce(env.url(), &topic, n, records, size, env.limits()),
                )
            };
            let many = produce(producers)?;
            let fewer = produce(FEWER_PRODUCERS)?;
            let one = produce(1)?;
            let host_m = host.as_ref().map(|f| f.measured);
            table.row(vec![
                env.row_label(round),
                format!("{size} B"),
                env.rate(&format!("{run}, host"), &host_m),
                env.rate(&format!("{run}, raw ×{producers}"), &many),
                rate_ratio(&host_m, &many),
                env.rate(&format!("{run}, raw ×{FEWER_PRODUCERS}"), &fewer),
                rate_ratio(&host_m, &fewer),
                env.rate(&format!("{run}, raw ×1"), &one),
                rate_ratio(&host_m, &one),
                cpu_cell(&host_m),
                cpu_cell(&many),
                cpu_ratio(&host_m, &many),
            ]);
            if let Outcome::Done(flow) = host {
                memory.push((format!("{}: source, {size} B", env.row_label(round)), flow));
            }
        }
    }
    Ok(())
}

fn host_source(env: &Env, size: usize, records: u64, round: u32) -> anyhow::Result<Outcome<Flow>> {
    Ok(tapped_source(env, size, records, round, None)?.0)
}

/// A host source run, with a tap read at `tap_rate` records a second when
/// given; returns the run and the records the tap showed.
fn tapped_source(
    env: &Env,
    size: usize,
    records: u64,
    round: u32,
    tap_rate: Option<u32>,
) -> anyhow::Result<(Outcome<Flow>, u64)> {
    let tapped = if tap_rate.is_some() { "-tapped" } else { "" };
    let topic = env.topic(&format!("src-host-{size}-{round}{tapped}"));
    let name = format!("bench-source-{}-{size}-{round}{tapped}", env.label());
    let mut host = HostProcess::start(
        env,
        &env.paths.guest("datagen-source")?,
        &name,
        &env.cache,
        "",
        &format!("[datagen]\ntopics = [\"{topic}\"]\ncount = {records}\npayload_size = {size}\n"),
    )?;
    let tap = tap_rate.map(|rate| host.tap(&name, rate)).transpose()?;
    let flow = measure(&mut host, records, HostProcess::sent, env.limits(), None)?;
    let shown = tap.map_or(0, |t| t.lines());
    finish(host, &flow)?;
    Ok((flow, shown))
}

/// Records a second `danube-host tap` asks for by default.
const TAP_RATE: u32 = 10;

pub fn tap_table(env: &Env) -> Table {
    let records = env.scale(2_000, 20_000);
    Table::new(
        "Tap: a source with and without a tap read",
        format!(
            "{records} datagen records of 100 B per row, as in the source table (host with \
             --api); \"tapped\": a client reads GET /connectors/NAME/tap?rate={TAP_RATE} \
             (what `danube-host tap` does) for the whole run. Records are made for a tap only \
             while someone listens; the tap then copies each record's topic, key, attributes \
             and first 200 payload bytes into a broadcast, and the reader keeps {TAP_RATE} a \
             second."
        ),
        &[
            "broker",
            "untapped rec/s",
            "tapped rec/s",
            "tapped / untapped",
            "untapped CPU µs/rec",
            "tapped CPU µs/rec",
            "CPU tapped / untapped",
            "records shown",
        ],
    )
}

pub fn tap(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let records = env.scale(2_000, 20_000);
    for round in 1..=env.repeat {
        let plain = host_source(env, 100, records, round)?.map(|f| f.measured);
        let (tapped, shown) = tapped_source(env, 100, records, round, Some(TAP_RATE))?;
        let tapped = tapped.map(|f| f.measured);
        table.row(vec![
            env.row_label(round),
            env.rate("untapped source", &plain),
            env.rate("tapped source", &tapped),
            rate_ratio(&tapped, &plain),
            cpu_cell(&plain),
            cpu_cell(&tapped),
            cpu_ratio(&tapped, &plain),
            shown.to_string(),
        ]);
    }
    Ok(())
}

/// Stops a host: a failed drain is an error after a finished run, not after
/// one the broker left unfinished (the host is killed then).
fn finish<T>(host: HostProcess, outcome: &Outcome<T>) -> anyhow::Result<()> {
    match outcome {
        Outcome::Done(_) => host.stop(),
        Outcome::Unfinished(_) => {
            drop(host);
            Ok(())
        }
    }
}

pub fn sink_table(env: &Env) -> Table {
    let records = env.scale(2_000, 10_000);
    let producers = feed::PRODUCERS;
    Table::new(
        "Sink: broker → host → discarding guest",
        format!(
            "{records} records per row from a shared subscription: the host hands them to the \
             probe guest, which discards them, and acknowledges each; the raw client receives and \
             acknowledges each. Not a backlog: the real broker drops a reliable subscription's \
             messages for good once it falls 256 behind, so the consumer subscribes first and \
             {producers} producers in the bench publish while it consumes, never more than {window} \
             records ahead of its acknowledgements (on both brokers alike). \"Starved\" (host / raw) \
             is the share of the feed's time in which the consumer had fewer than 10 records \
             waiting (sampled every ms): near 0 % the consumer set the pace; the larger, the more \
             the producers held it back and the rate is a floor. With \
             `linger_ms` = 0 (the default) the host hands a batch on once nothing more is \
             waiting; with 5 it also waits for more before it hands on each batch. CPU: µs per \
             record, the host's supervisor and worker together against the raw consumer's share \
             of the bench process (its producers' thread left out).",
            window = feed::WINDOW,
        ),
        &[
            "broker",
            "payload",
            "host linger_ms",
            "host rec/s",
            "raw rec/s",
            "host / raw",
            "host CPU µs/rec",
            "raw CPU µs/rec",
            "CPU host / raw",
            "starved",
        ],
    )
}

pub fn sink(env: &Env, table: &mut Table, memory: &mut Memory) -> anyhow::Result<()> {
    let records = env.scale(2_000, 10_000);
    for round in 1..=env.repeat {
        for size in [100, 1024] {
            let (raw, raw_held) = raw_sink(env, size, records, round)?;
            for linger_ms in [0, 5] {
                let run = format!("sink {size} B, linger_ms {linger_ms}");
                let (host, host_held) = host_sink(env, size, records, linger_ms, round)?;
                let host_m = host.as_ref().map(|f| f.measured);
                table.row(vec![
                    env.row_label(round),
                    format!("{size} B"),
                    format!(
                        "{linger_ms}{}",
                        if linger_ms == 0 { " (default)" } else { "" }
                    ),
                    env.rate(&format!("{run}, host"), &host_m),
                    env.rate(&format!("{size} B sink, raw"), &raw),
                    rate_ratio(&host_m, &raw),
                    cpu_cell(&host_m),
                    cpu_cell(&raw),
                    cpu_ratio(&host_m, &raw),
                    format!("{host_held} / {raw_held}"),
                ]);
                if let (0, Outcome::Done(flow)) = (linger_ms, host) {
                    memory.push((format!("{}: sink, {size} B", env.row_label(round)), flow));
                }
            }
        }
    }
    Ok(())
}

const SUBSCRIPTION: &str = "bench";

fn raw_sink(
    env: &Env,
    size: usize,
    records: u64,
    round: u32,
) -> anyhow::Result<(Outcome<Measured>, String)> {
    let topic = env.topic(&format!("sink-raw-{size}-{round}"));
    let consumer = env.block_on_within(Duration::from_secs(60), async {
        let client = raw::client(env.url()).await?;
        drop(raw::producer(&client, &topic, "bench-sink-topic").await?);
        raw::consumer(&client, &topic, SUBSCRIPTION).await
    })?;
    let consumed = Arc::new(AtomicU64::new(0));
    let feeder = start_feed(env, &topic, records, size, &consumed)?;
    let outcome = env.block_on_within(
        env.limits().total + Duration::from_secs(30),
        raw::consume(
            consumer,
            records,
            &consumed,
            feeder.cpu_reader(),
            env.limits(),
        ),
    );
    let fed = feeder.finish()?;
    Ok((outcome?, held(&fed)))
}

fn host_sink(
    env: &Env,
    size: usize,
    records: u64,
    linger_ms: u64,
    round: u32,
) -> anyhow::Result<(Outcome<Flow>, String)> {
    let topic = env.topic(&format!("sink-host-{size}-{linger_ms}-{round}"));
    // The topic exists before the host starts, and the feed starts once the
    // host has subscribed. (No consumer of the bench's creates the
    // subscription first: when one had subscribed and closed, the host got
    // 4 of 2,000 records on the real broker and then nothing, as if the
    // broker went on dispatching to the closed consumer.)
    env.block_on_within(Duration::from_secs(60), async {
        let client = raw::client(env.url()).await?;
        drop(raw::producer(&client, &topic, "bench-sink-topic").await?);
        anyhow::Ok(())
    })?;
    let mut host = HostProcess::start(
        env,
        &env.paths.guest("probe-connector")?,
        &format!("bench-sink-{}-{size}-{linger_ms}-{round}", env.label()),
        &env.cache,
        "",
        &format!(
            "[processing]\nlinger_ms = {linger_ms}\n\n\
             [probe]\ntopic = \"{topic}\"\nsubscription = \"{SUBSCRIPTION}\"\n"
        ),
    )?;
    host.wait_ready(Duration::from_secs(60))?;
    let consumed = Arc::new(AtomicU64::new(0));
    let feeder = start_feed(env, &topic, records, size, &consumed)?;
    let flow = measure(
        &mut host,
        records,
        HostProcess::sent,
        env.limits(),
        Some(&consumed),
    );
    let fed = feeder.finish()?;
    let flow = flow?;
    finish(host, &flow)?;
    Ok((flow, held(&fed)))
}

fn start_feed(
    env: &Env,
    topic: &str,
    records: u64,
    size: usize,
    consumed: &Arc<AtomicU64>,
) -> anyhow::Result<Feeder> {
    Feeder::start(
        env.url(),
        topic,
        records,
        size,
        consumed.clone(),
        env.limits().total,
    )
}

fn held(fed: &feed::Fed) -> String {
    format!("{:.0} %", 100.0 * fed.starved)
}

/// Follows `count` every 5 ms until it reaches `target` (publishing it in
/// `consumed` for a feed), or the broker stops it: the rate and the CPU time
/// are taken from the first record counted to the last, so start-up is left
/// out. Memory is sampled throughout, then once more after a second of rest.
fn measure(
    host: &mut HostProcess,
    target: u64,
    count: fn(&HostProcess) -> u64,
    limits: Limits,
    consumed: Option<&AtomicU64>,
) -> anyhow::Result<Outcome<Flow>> {
    let mut first = None;
    let mut peak = Rss::default();
    let mut progress = Progress::new(target, limits);
    let mut unfinished = None;
    let mut last = 0;
    host.wait_until(limits.total + Duration::from_secs(5), "done", |h| {
        std::thread::sleep(next_look(
            first.map(|(at, n, _)| (at, n)),
            last,
            target,
            consumed.is_some(),
        ));
        let n = count(h);
        last = n;
        if let Some(consumed) = consumed {
            consumed.store(n, Ordering::Relaxed);
        }
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n, h.cpu()));
        }
        peak = peak.max(h.rss());
        unfinished = progress.check(n);
        n >= target || unfinished.is_some()
    })?;
    if let Some(unfinished) = unfinished {
        return Ok(Outcome::Unfinished(unfinished));
    }
    let (started, counted, cpu_start) = first.expect("the wait ended with records counted");
    let elapsed = started.elapsed();
    let cpu_end = host.cpu();
    let cpu_us = cpu_start
        .zip(cpu_end)
        .and_then(|(start, end)| start.until(&end))
        .map(|cpu| cpu::per_record(cpu, target - counted));
    std::thread::sleep(Duration::from_secs(1));
    Ok(Outcome::Done(Flow {
        measured: Measured {
            records_per_s: (target - counted) as f64 / elapsed.as_secs_f64(),
            cpu_us,
        },
        peak,
        idle: host.rss(),
    }))
}

/// How long to wait before the next look at the host's counter. Each look
/// at `/metrics` costs the supervisor about 0.18 ms of CPU, which counts in
/// its CPU per record (4 µs per record at 9,000 records/s if it looked every
/// 4 ms): while the last record is more than 150 ms away at the rate so far,
/// it looks every 50 ms; before the first record and near the last, every
/// 4 ms, so both ends of the measured window stay exact to a few ms. A sink's
/// feed needs the count all along (`feeding`).
fn next_look(first: Option<(Instant, u64)>, counted: u64, target: u64, feeding: bool) -> Duration {
    const CLOSE: Duration = Duration::from_millis(4);
    let Some((at, at_first)) = first.filter(|_| !feeding) else {
        return CLOSE;
    };
    let rate = counted.saturating_sub(at_first) as f64 / at.elapsed().as_secs_f64().max(1e-3);
    let left = target.saturating_sub(counted) as f64 / rate.max(1.0);
    match left > 0.15 {
        true => Duration::from_millis(50),
        false => CLOSE,
    }
}

fn rate_ratio(ours: &Outcome<Measured>, theirs: &Outcome<Measured>) -> String {
    match (ours, theirs) {
        (Outcome::Done(a), Outcome::Done(b)) => ratio(a.records_per_s, b.records_per_s),
        _ => "—".into(),
    }
}

fn cpu_cell(m: &Outcome<Measured>) -> String {
    match m {
        Outcome::Done(Measured {
            cpu_us: Some(us), ..
        }) => format!("{us:.1}"),
        _ => "—".into(),
    }
}

fn cpu_ratio(ours: &Outcome<Measured>, theirs: &Outcome<Measured>) -> String {
    match (ours, theirs) {
        (
            Outcome::Done(Measured {
                cpu_us: Some(a), ..
            }),
            Outcome::Done(Measured {
                cpu_us: Some(b), ..
            }),
        ) => ratio(*a, *b),
        _ => "—".into(),
    }
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
        table.row(vec![
            run.clone(),
            mib(flow.idle.supervisor_kib),
            mib(flow.idle.worker_kib),
            mib(flow.peak.supervisor_kib),
            mib(flow.peak.worker_kib),
        ]);
    }
    table
}
