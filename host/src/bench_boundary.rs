//! `danube-host bench-boundary` (hidden): measures the process boundary alone
//! — supervisor → worker process → guest `process-batch` and back — with no
//! broker, through the same [`Worker`](crate::supervisor::Worker) handle the
//! sink pipeline uses. `danube-bench` runs it; it prints one JSON line per
//! case on standard output: records, seconds, and the CPU time the
//! supervisor (this process) and the worker spent meanwhile, read from
//! their CPU clocks (steadier than a rate on a shared machine).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;

use crate::contract::{Call, CallOutcome, SinkRecord};
use crate::exit;
use crate::supervisor::{Guest, LogSettings, StateStore, start_worker};

/// Batches kept in flight, as the sink pipeline does.
const BATCHES_IN_FLIGHT: usize = 2;

#[derive(Args)]
pub struct BenchArgs {
    /// A sink component that accepts every record (the probe fixture).
    #[arg(long)]
    module: PathBuf,
    /// Records per `process-batch` call; repeatable.
    #[arg(long = "batch", required = true)]
    batches: Vec<usize>,
    /// Payload sizes in bytes; repeatable.
    #[arg(long = "payload", required = true)]
    payloads: Vec<usize>,
    /// Records sent per case (rounded up to whole batches).
    #[arg(long, default_value_t = 100_000)]
    records: usize,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    let log = LogSettings {
        filter: crate::logging::filter_from_env("warn"),
        json: false,
    };
    crate::logging::init(&log.filter, log.json);
    match measure(&args, &log).await {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("danube-host bench-boundary: {e:#}");
            ExitCode::from(exit::INTERNAL)
        }
    }
}

async fn measure(args: &BenchArgs, log: &LogSettings) -> anyhow::Result<()> {
    let worker = start_worker(&args.module, None, StateStore::in_memory(), log, None).await?;
    match worker
        .call(
            0,
            Call::Open {
                config_json: "{}".into(),
            },
        )
        .await?
    {
        CallOutcome::Opened(_) => {}
        other => anyhow::bail!("open returned {other:?}"),
    }
    for &payload in &args.payloads {
        for &batch in &args.batches {
            let template = record(payload);
            let calls = args.records.div_ceil(batch.max(1));
            // One call first, so the case starts with the code paths warm.
            process(&worker, vec![template.clone(); batch]).await?;
            let started = Instant::now();
            let cpu_before = cpu(&worker)?;
            let mut replies = futures::stream::iter(0..calls)
                .map(|_| process(&worker, vec![template.clone(); batch]))
                .buffered(BATCHES_IN_FLIGHT);
            while let Some(reply) = replies.next().await {
                reply?;
            }
            let seconds = started.elapsed().as_secs_f64();
            let cpu_seconds = cpu(&worker)? - cpu_before;
            println!(
                "{}",
                serde_json::json!({
                    "batch": batch,
                    "payload": payload,
                    "records": calls * batch,
                    "seconds": seconds,
                    "cpu_seconds": cpu_seconds,
                })
            );
        }
    }
    worker.stop().await;
    Ok(())
}

/// CPU seconds so far of this process (the supervisor's side) and of the
/// worker process, every thread of each.
fn cpu(worker: &crate::supervisor::Worker) -> anyhow::Result<f64> {
    let pid = worker.pid().context("the worker process is gone")?;
    let mut worker_clock: libc::clockid_t = 0;
    // SAFETY: `worker_clock` is a valid clockid_t to write to.
    if unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut worker_clock) } != 0 {
        anyhow::bail!("cannot read the worker's CPU clock");
    }
    [libc::CLOCK_PROCESS_CPUTIME_ID, worker_clock]
        .into_iter()
        .map(|clock| {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid timespec to write to.
            if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
                anyhow::bail!(
                    "cannot read a CPU clock: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
        })
        .sum()
}

/// One `process-batch` call that must accept every record.
async fn process(
    worker: &crate::supervisor::Worker,
    records: Vec<SinkRecord>,
) -> anyhow::Result<()> {
    match worker.call(0, Call::ProcessBatch { records }).await? {
        CallOutcome::Processed(failures) if failures.is_empty() => Ok(()),
        other => anyhow::bail!("process-batch returned {other:?}"),
    }
}

/// A record shaped like one consumed from Danube.
fn record(payload: usize) -> SinkRecord {
    SinkRecord {
        topic: "/default/bench".into(),
        payload: vec![b'x'; payload],
        attributes: vec![("seq".into(), "0".into())],
        key: None,
        publish_time: 0,
        producer: "bench".into(),
        offset: 0,
        redelivery_count: 0,
        schema: None,
    }
}
