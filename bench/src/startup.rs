//! Scenario 4: how long until the first record flows — a host started with
//! an empty module cache (it compiles the guest), with a warm one, and a
//! worker restarted after SIGKILL.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::host::HostProcess;
use crate::report::Table;
use crate::{Env, raw};

/// How long a first record may take before the case is reported unfinished.
const FIRST_RECORD: Duration = Duration::from_secs(60);

pub fn table() -> Table {
    Table::new(
        "Start-up: to the first record",
        "Source: from starting `danube-host` (datagen-source) to the first record arriving at a \
         consumer already subscribed. Restart: a sink host (probe guest) idle, its worker killed \
         with SIGKILL, one record published at once; time until the new worker wrote it. The \
         restart includes the restart backoff (`[retry] retry_backoff_ms`)."
            .into(),
        &["broker", "case", "time"],
    )
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let fresh = tempfile::tempdir()?;
    let mut row = |case: String, time: Option<Duration>| {
        let cell = match time {
            Some(time) => millis(time),
            None => env.unfinished(
                &case,
                format!("no record within {} s", FIRST_RECORD.as_secs()),
            ),
        };
        table.row(vec![env.label().to_string(), case, cell]);
    };
    row(
        "first run (empty module cache: compiles the guest)".into(),
        first_record(env, "first", fresh.path())?,
    );
    row(
        "cached run".into(),
        first_record(env, "cached", fresh.path())?,
    );
    for backoff_ms in [200, 1] {
        row(
            format!("worker restart, retry_backoff_ms = {backoff_ms}"),
            restart(env, backoff_ms)?,
        );
    }
    Ok(())
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// The time to the first record; `None` if none came within [`FIRST_RECORD`].
fn first_record(
    env: &Env,
    case: &str,
    cache: &std::path::Path,
) -> anyhow::Result<Option<Duration>> {
    let topic = env.topic(&format!("start-{case}"));
    let (mut consumer, mut messages) = env.block_on_within(Duration::from_secs(60), async {
        let client = raw::client(env.url()).await?;
        drop(raw::producer(&client, &topic, "bench-topic").await?);
        let mut consumer = raw::consumer(&client, &topic, "bench").await?;
        let messages = consumer.receive().await?;
        anyhow::Ok((consumer, messages))
    })?;
    let started = Instant::now();
    let host = HostProcess::start(
        env,
        &env.paths.guest("datagen-source")?,
        &format!("bench-start-{}-{case}", env.label()),
        cache,
        "",
        &format!("[datagen]\ntopics = [\"{topic}\"]\ncount = 100\n"),
    )?;
    let received = env.block_on(async {
        tokio::time::timeout(FIRST_RECORD, messages.recv())
            .await
            .map(|m| m.context("the consumer's stream ended"))
    });
    let elapsed = started.elapsed();
    let arrived = match received {
        Ok(message) => {
            message.with_context(|| format!("log:\n{}", host.log()))?;
            host.stop()?;
            Some(elapsed)
        }
        Err(_) => None,
    };
    env.block_on(async { tokio::time::timeout(Duration::from_secs(10), consumer.close()).await })
        .ok();
    Ok(arrived)
}

/// The time from a worker's SIGKILL to its successor's first write; `None`
/// if it did not come within [`FIRST_RECORD`].
fn restart(env: &Env, backoff_ms: u64) -> anyhow::Result<Option<Duration>> {
    let topic = env.topic(&format!("restart-{backoff_ms}"));
    let producer = env.block_on_within(Duration::from_secs(60), async {
        let client = raw::client(env.url()).await?;
        raw::producer(&client, &topic, "bench-restart").await
    })?;
    let mut host = HostProcess::start(
        env,
        &env.paths.guest("probe-connector")?,
        &format!("bench-restart-{}-{backoff_ms}", env.label()),
        &env.cache,
        "",
        &format!(
            "[retry]\nretry_backoff_ms = {backoff_ms}\n\n[probe]\ntopic = \"{topic}\"\nsubscription = \"bench\"\n"
        ),
    )?;
    host.wait_ready(Duration::from_secs(60))?;
    let send = |seq: u64| {
        env.block_on_within(Duration::from_secs(30), async {
            Ok(producer
                .send(raw::datagen_payload(seq, &topic, 100), None)
                .await?)
        })
    };
    send(0)?;
    if !host.wait_until(FIRST_RECORD, "writing the first record", |h| h.sent() >= 1)? {
        return Ok(None);
    }
    let worker = host
        .worker_pid()
        .context("the host has no worker process")?;
    // SAFETY: kill(2) on the worker of a host this bench started.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    let killed = Instant::now();
    send(1)?;
    if !host.wait_until(FIRST_RECORD, "writing after the restart", |h| h.sent() >= 2)? {
        return Ok(None);
    }
    let elapsed = killed.elapsed();
    host.stop()?;
    Ok(Some(elapsed))
}
