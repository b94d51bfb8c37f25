//! Scenario 6: latency from the producer's send to the sink's write, at a
//! fixed rate, beside the raw client's send-to-receive.
//!
//! Each payload carries its send time (wall clock, nanoseconds). The host
//! runs the probe guest with `write_to`: it appends each payload to a file in
//! a granted directory, which a thread here reads every millisecond, so a
//! host figure includes up to a millisecond of that polling.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use danube_client::Producer;

use crate::bound::{Outcome, Unfinished};
use crate::host::HostProcess;
use crate::report::Table;
use crate::{Env, raw};

const PAYLOAD: usize = 100;

/// How long a sink may go without a record before the rate's row is
/// reported unfinished.
const QUIET: Duration = Duration::from_secs(30);

pub fn table(env: &Env) -> Table {
    let seconds = env.scale(2, 10);
    Table::new(
        "Latency at a fixed rate",
        format!(
            "{seconds} s of {PAYLOAD} B records at each rate from one producer. Host: send → the \
             probe sink's write, with the sink's defaults (`linger_ms` = 0: a batch is handed on \
             as soon as nothing more is waiting). Raw: send → receive by a subscribed consumer."
        ),
        &["broker", "path", "rate", "p50", "p99", "max"],
    )
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let seconds = env.scale(2, 10);
    for rate in [100, 400] {
        let records = rate * seconds;
        let host = host(env, rate, records)?;
        let raw = raw_client(env, rate, records)?;
        for (name, latencies) in [("host (sink write)", host), ("raw client (receive)", raw)] {
            let mut row = vec![
                env.label().to_string(),
                name.to_string(),
                format!("{rate}/s"),
            ];
            match latencies {
                Outcome::Done(mut latencies) => {
                    latencies.sort_unstable();
                    let at =
                        |q: usize| latencies[(latencies.len() * q / 100).min(latencies.len() - 1)];
                    row.extend([
                        ms(at(50)),
                        ms(at(99)),
                        ms(*latencies.last().context("no latencies")?),
                    ]);
                }
                Outcome::Unfinished(u) => {
                    let what = format!("{name} at {rate}/s");
                    row.extend([env.unfinished(&what, u.to_string()), "—".into(), "—".into()]);
                }
            }
            table.row(row);
        }
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn host(env: &Env, rate: u64, records: u64) -> anyhow::Result<Outcome<Vec<Duration>>> {
    let topic = env.topic(&format!("latency-host-{rate}"));
    let out = env.work.path().join(format!("latency-{rate}"));
    std::fs::create_dir_all(&out)?;
    let file = out.join("written.jsonl");
    std::fs::write(&file, "")?;
    let producer = env.block_on_within(Duration::from_secs(60), async {
        let client = raw::client(env.url()).await?;
        raw::producer(&client, &topic, "bench-latency").await
    })?;
    let mut host = HostProcess::start(
        env,
        &env.paths.guest("probe-connector")?,
        &format!("bench-latency-{}-{rate}", env.label()),
        &env.cache,
        &format!("dirs = [\"{}\"]", out.display()),
        &format!(
            "[probe]\ntopic = \"{topic}\"\nsubscription = \"bench\"\nwrite_to = \"{}\"\n",
            file.display()
        ),
    )?;
    host.wait_ready(Duration::from_secs(60))?;
    let tail = {
        let file = file.clone();
        std::thread::spawn(move || tail_latencies(&file, records))
    };
    let published = env.block_on_within(
        Duration::from_secs(seconds_for(rate, records)) + QUIET,
        publish_at_rate(&producer, &topic, rate, records),
    );
    let latencies = tail.join().expect("the tail thread does not panic")?;
    // A broker that stops acknowledging leaves the sink short: that is
    // reported as unfinished, whatever became of the sends.
    if let Outcome::Done(_) = latencies {
        published?;
        host.stop()?;
    }
    Ok(latencies)
}

/// How long publishing `records` at `rate` takes, at least.
fn seconds_for(rate: u64, records: u64) -> u64 {
    records.div_ceil(rate)
}

fn raw_client(env: &Env, rate: u64, records: u64) -> anyhow::Result<Outcome<Vec<Duration>>> {
    let topic = env.topic(&format!("latency-raw-{rate}"));
    let limit = Duration::from_secs(seconds_for(rate, records) + 60) + QUIET;
    env.block_on_within(limit, async {
        let client = raw::client(env.url()).await?;
        let producer = raw::producer(&client, &topic, "bench-latency").await?;
        let mut consumer = raw::consumer(&client, &topic, "bench").await?;
        let mut messages = consumer.receive().await?;
        let receiving = tokio::spawn(async move {
            let mut latencies = Vec::new();
            let started = Instant::now();
            while (latencies.len() as u64) < records {
                let Ok(message) = tokio::time::timeout(QUIET, messages.recv()).await else {
                    return anyhow::Ok(Outcome::Unfinished(Unfinished {
                        done: latencies.len() as u64,
                        of: records,
                        after: started.elapsed(),
                        quiet: Some(QUIET),
                    }));
                };
                let message = message.context("the consumer's stream ended")?;
                latencies.push(since_sent(&message.payload)?);
                consumer.ack(&message).await?;
            }
            consumer.close().await;
            Ok(Outcome::Done(latencies))
        });
        publish_at_rate(&producer, &topic, rate, records).await?;
        receiving.await?
    })
}

async fn publish_at_rate(
    producer: &Producer,
    topic: &str,
    rate: u64,
    records: u64,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..records {
        ticks.tick().await;
        let sent = now_ns();
        let bare = format!("{{\"sent_ns\":{sent},\"topic\":\"{topic}\",\"pad\":\"\"}}");
        let pad = "x".repeat(PAYLOAD.saturating_sub(bare.len()));
        let payload = format!("{{\"sent_ns\":{sent},\"topic\":\"{topic}\",\"pad\":\"{pad}\"}}");
        producer.send(payload.into_bytes(), None).await?;
    }
    Ok(())
}

/// Reads the lines the sink appends, every millisecond, until `records`
/// arrived; each line's latency is taken when it is first seen.
fn tail_latencies(file: &Path, records: u64) -> anyhow::Result<Outcome<Vec<Duration>>> {
    let mut reader = BufReader::new(std::fs::File::open(file)?);
    let mut latencies = Vec::new();
    let mut line = String::new();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    while (latencies.len() as u64) < records {
        // A line is complete once its newline is in; a partial one waits.
        if reader.read_line(&mut line)? > 0 && line.ends_with('\n') {
            latencies.push(since_sent(line.as_bytes())?);
            line.clear();
            last_progress = Instant::now();
            continue;
        }
        if last_progress.elapsed() > QUIET {
            return Ok(Outcome::Unfinished(Unfinished {
                done: latencies.len() as u64,
                of: records,
                after: started.elapsed(),
                quiet: Some(QUIET),
            }));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Outcome::Done(latencies))
}

fn since_sent(payload: &[u8]) -> anyhow::Result<Duration> {
    let now = now_ns();
    let value: serde_json::Value = serde_json::from_slice(payload)?;
    let sent = value["sent_ns"]
        .as_u64()
        .context("a payload without sent_ns")?;
    Ok(Duration::from_nanos(now.saturating_sub(sent)))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
