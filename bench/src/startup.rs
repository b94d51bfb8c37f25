//! Scenario 4: how long until the first record flows — a host started with
//! an empty module cache (it compiles the guest), with a warm one, and a
//! worker restarted after SIGKILL.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::host::HostProcess;
use crate::report::Table;
use crate::{Env, raw};

pub fn run(env: &Env) -> anyhow::Result<Table> {
    let mut table = Table::new(
        "Start-up: to the first record",
        "Source: from starting `danube-host` (datagen-source) to the first record arriving at a \
         consumer already subscribed. Restart: a sink host (probe guest) idle, its worker killed \
         with SIGKILL, one record published at once; time until the new worker wrote it. The \
         restart includes the restart backoff (`[retry] retry_backoff_ms`)."
            .into(),
        &["case", "time"],
    );
    let fresh = tempfile::tempdir()?;
    table.row([
        "first run (empty module cache: compiles the guest)".into(),
        millis(first_record(env, "first", fresh.path())?),
    ]);
    table.row([
        "cached run".into(),
        millis(first_record(env, "cached", fresh.path())?),
    ]);
    for backoff_ms in [200, 1] {
        table.row([
            format!("worker restart, retry_backoff_ms = {backoff_ms}"),
            millis(restart(env, backoff_ms)?),
        ]);
    }
    Ok(table)
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn first_record(env: &Env, case: &str, cache: &std::path::Path) -> anyhow::Result<Duration> {
    let topic = env.topic(&format!("start-{case}"));
    let (mut consumer, mut messages) = env.block_on(async {
        let client = raw::client(&env.broker.url).await?;
        drop(raw::producer(&client, &topic, "bench-topic").await?);
        let mut consumer = raw::consumer(&client, &topic, "bench").await?;
        let messages = consumer.receive().await?;
        anyhow::Ok((consumer, messages))
    })?;
    let started = Instant::now();
    let host = HostProcess::start(
        env,
        &env.paths.guest("datagen-source")?,
        &format!("bench-start-{case}"),
        cache,
        "",
        &format!("[datagen]\ntopics = [\"{topic}\"]\ncount = 100\n"),
    )?;
    env.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), messages.recv())
            .await
            .context("no record within 60 s")?
            .context("the consumer's stream ended")
    })
    .with_context(|| format!("log:\n{}", host.log()))?;
    let elapsed = started.elapsed();
    host.stop()?;
    env.block_on(consumer.close());
    Ok(elapsed)
}

fn restart(env: &Env, backoff_ms: u64) -> anyhow::Result<Duration> {
    let topic = env.topic(&format!("restart-{backoff_ms}"));
    let producer = env.block_on(async {
        let client = raw::client(&env.broker.url).await?;
        raw::producer(&client, &topic, "bench-restart").await
    })?;
    let mut host = HostProcess::start(
        env,
        &env.paths.guest("probe-connector")?,
        &format!("bench-restart-{backoff_ms}"),
        &env.cache,
        "",
        &format!(
            "[retry]\nretry_backoff_ms = {backoff_ms}\n\n[probe]\ntopic = \"{topic}\"\nsubscription = \"bench\"\n"
        ),
    )?;
    host.wait_ready(Duration::from_secs(60))?;
    let send = |seq: u64| env.block_on(producer.send(raw::datagen_payload(seq, &topic, 100), None));
    send(0)?;
    host.wait_for(Duration::from_secs(30), "writing the first record", |h| {
        h.sent() >= 1
    })?;
    let worker = host
        .worker_pid()
        .context("the host has no worker process")?;
    // SAFETY: kill(2) on the worker of a host this bench started.
    unsafe { libc::kill(worker, libc::SIGKILL) };
    let killed = Instant::now();
    send(1)?;
    host.wait_for(Duration::from_secs(30), "writing after the restart", |h| {
        h.sent() >= 2
    })?;
    let elapsed = killed.elapsed();
    host.stop()?;
    Ok(elapsed)
}
