//! The restart loop: one connector's workers, one after another, on one
//! pipeline.
//!
//! The pipeline (subscriptions, producers, batches a dead worker held)
//! outlives its workers. A worker that dies is replaced with capped
//! exponential backoff; deaths count as a run only while no work gets done,
//! so a connector that keeps making progress is never given up on, and one
//! that cannot start a worker stops with the last reason.

use std::time::Duration;

use tokio::sync::watch;

use super::danube::Danube;
use super::retry::{self, RetryPolicy};
use super::worker::Guest;
use super::{Stop, ingress, new_trace_id, outcome_error, sink, source};
use crate::capability;
use crate::config::ConnectorConfig;
use crate::contract::{CallOutcome, ConnectorError, Opened};
use crate::observability::{ConnectorMetrics, Status};
use crate::operations::Pause;

/// The Danube side of a connector, which outlives its workers.
enum Pipeline<'a, D: Danube> {
    Source(Box<source::SourcePipeline<'a, D>>),
    Sink(Box<sink::SinkPipeline<'a, D>>),
    Ingress(Box<ingress::IngressPipeline<'a, D>>),
}

impl<'a, D: Danube> Pipeline<'a, D> {
    async fn start(
        danube: &D,
        config: &'a ConnectorConfig,
        policy: &RetryPolicy,
        opened: Opened,
        shutdown: &watch::Receiver<bool>,
        pause: &Pause,
    ) -> Result<Pipeline<'a, D>, Stop> {
        capability::topics::check_opened(&config.host.sandbox, &opened).map_err(Stop::Config)?;
        let policy = policy.clone();
        Ok(match opened {
            Opened::Source(producers) => Pipeline::Source(Box::new(
                source::SourcePipeline::start(danube, config, policy, producers, pause.clone())
                    .await?,
            )),
            Opened::Sink(consumers) => Pipeline::Sink(Box::new(
                sink::SinkPipeline::start(
                    danube,
                    config,
                    policy,
                    consumers,
                    shutdown,
                    pause.clone(),
                )
                .await?,
            )),
            Opened::Ingress(setup) => Pipeline::Ingress(Box::new(
                ingress::IngressPipeline::start(danube, config, policy, setup).await?,
            )),
        })
    }

    async fn run(
        &mut self,
        worker: &impl Guest,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        match self {
            Pipeline::Source(p) => p.run(worker, shutdown).await,
            Pipeline::Sink(p) => p.run(worker, shutdown).await,
            Pipeline::Ingress(p) => p.run(worker, shutdown).await,
        }
    }

    fn progress(&self) -> u64 {
        match self {
            Pipeline::Source(p) => p.progress(),
            Pipeline::Sink(p) => p.progress(),
            Pipeline::Ingress(p) => p.progress(),
        }
    }

    /// A source is ready once its producers exist, an ingress once it
    /// listens too, a sink once every one of its subscriptions is open
    /// (until then what is published does not reach it: a new subscription
    /// starts at the latest message).
    fn ready(&self) -> bool {
        match self {
            Pipeline::Source(_) | Pipeline::Ingress(_) => true,
            Pipeline::Sink(p) => p.subscribed(),
        }
    }

    async fn finish(self) {
        match self {
            Pipeline::Sink(p) => p.finish().await,
            Pipeline::Ingress(p) => p.finish().await,
            Pipeline::Source(_) => {}
        }
    }
}

/// A worker that lived this long (or settled work) is considered healthy
/// again: its death starts the restart backoff from the beginning.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Runs `first`, then a worker from `spawn` each time one dies, until
/// `shutdown` turns true (then drains) or the connector fails for good.
pub(super) async fn run_workers<D: Danube, G: Guest, S: Future<Output = Result<G, Stop>>>(
    danube: &D,
    config: &ConnectorConfig,
    policy: &RetryPolicy,
    first: G,
    mut spawn: impl FnMut() -> S,
    shutdown: &watch::Receiver<bool>,
    pause: Pause,
) -> Result<(), Stop> {
    let mut next_worker = Some(first);
    let mut pipeline: Option<Pipeline<D>> = None;
    let mut restarts = retry::Backoff::new(&config.host.retry);
    let metrics = &policy.metrics;
    let result = loop {
        let worker = match next_worker.take() {
            Some(w) => w,
            None => match spawn().await {
                Ok(w) => w,
                Err(stop) => break Err(stop),
            },
        };
        let started = tokio::time::Instant::now();
        let progress_before = pipeline.as_ref().map_or(0, Pipeline::progress);
        let running = match open(&worker, config, policy).await {
            Ok(opened) => match pipeline.take() {
                Some(p) => Ok(p),
                None => Pipeline::start(danube, config, policy, opened, shutdown, &pause).await,
            },
            Err(e) => Err(e),
        };
        let result = match running {
            Ok(p) => {
                metrics.set_ready(p.ready());
                metrics.set_health(Status::Healthy, "running");
                let interval = Duration::from_millis(config.host.processing.health_interval_ms);
                tokio::select! {
                    result = pipeline.insert(p).run(&worker, shutdown.clone()) => result,
                    never = watch_health(&worker, metrics, interval) => match never {},
                }
            }
            Err(e) => Err(e),
        };
        if !matches!(result, Err(Stop::WorkerGone(_))) {
            close(&worker, config).await;
        }
        worker.stop().await;
        match result {
            Err(Stop::WorkerGone(why)) if !*shutdown.borrow() => {
                // A worker that lived long or got work done does not count
                // towards a run of deaths.
                let progressed = pipeline.as_ref().map_or(0, Pipeline::progress) > progress_before;
                if progressed || started.elapsed() >= STABLE_AFTER {
                    restarts = retry::Backoff::new(&config.host.retry);
                }
                match restarts.next_delay() {
                    Some(delay) => {
                        metrics.worker_restarted();
                        metrics.set_health(
                            Status::Degraded,
                            format!("worker died, restarting: {why}"),
                        );
                        tracing::warn!(error = %why, restart = restarts.attempts(), restart_in_ms = delay.as_millis() as u64, "worker died; restarting it");
                        let mut shutdown = shutdown.clone();
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            // A drain needs no new worker: nothing is in
                            // flight, and what the dead one held was not
                            // acknowledged, so the broker delivers it again.
                            _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
                        }
                    }
                    None => {
                        break Err(Stop::Fatal(format!(
                            "the worker died {} times in a row, last: {why}",
                            restarts.attempts() + 1
                        )));
                    }
                }
            }
            other => break other,
        }
    };
    if let Some(p) = pipeline {
        p.finish().await;
    }
    result
}

/// Calls the guest's `open` with its configuration table. An external
/// system that is not reachable yet (`retryable`) is waited for, with the
/// `[retry]` backoff, as any other retried call.
async fn open(
    worker: &impl Guest,
    config: &ConnectorConfig,
    policy: &RetryPolicy,
) -> Result<Opened, Stop> {
    let attempt = || async {
        let call = crate::contract::Call::Open {
            config_json: config.connector_json(),
        };
        match worker.call(new_trace_id(), call).await {
            Ok(CallOutcome::Opened(opened)) => Ok(opened),
            Ok(CallOutcome::Error(ConnectorError::Retryable(why))) => {
                Err((Stop::Fatal(format!("open failed: {why}")), true))
            }
            Ok(CallOutcome::Error(ConnectorError::Config(m))) => Err((
                Stop::Config(format!(
                    "{}: [{}] {m}",
                    config.path.display(),
                    config.section.as_deref().unwrap_or("connector")
                )),
                false,
            )),
            Ok(other) => Err((outcome_error("open", other), false)),
            Err(e) => Err((Stop::WorkerGone(e.to_string()), false)),
        }
    };
    retry::retry(policy, "open", attempt).await
}

/// Asks the guest's `health()` every `interval`: a failure marks the connector
/// degraded until it passes again. It never ends the pipeline itself: once the
/// worker is gone it stops asking, and the pipeline (which must keep the
/// batches the worker held) notices at its next call.
async fn watch_health(
    worker: &impl Guest,
    metrics: &ConnectorMetrics,
    interval: Duration,
) -> std::convert::Infallible {
    let mut failing = false;
    loop {
        tokio::time::sleep(interval).await;
        match worker
            .call(new_trace_id(), crate::contract::Call::Health)
            .await
        {
            Ok(CallOutcome::Done) if failing => {
                failing = false;
                metrics.set_health(Status::Healthy, "running");
            }
            Ok(CallOutcome::Done) => {}
            Ok(CallOutcome::Error(e)) => {
                failing = true;
                let why = match e {
                    ConnectorError::Retryable(m)
                    | ConnectorError::InvalidData(m)
                    | ConnectorError::Fatal(m)
                    | ConnectorError::Config(m) => m,
                };
                tracing::warn!(error = %why, "the connector reports itself unhealthy");
                metrics.set_health(Status::Degraded, format!("connector health: {why}"));
            }
            Ok(CallOutcome::Trapped(_)) | Err(_) => return std::future::pending().await,
            Ok(other) => tracing::warn!(outcome = ?other, "unexpected answer to health"),
        }
    }
}

/// Calls the guest's `close`, bounded by the call time limit.
async fn close(worker: &impl Guest, config: &ConnectorConfig) {
    let call = worker.call(new_trace_id(), crate::contract::Call::Close);
    match tokio::time::timeout(
        Duration::from_millis(config.host.sandbox.call_timeout_ms),
        call,
    )
    .await
    {
        Ok(Ok(CallOutcome::Done)) => {}
        Ok(Ok(other)) => tracing::warn!(outcome = ?other, "close did not finish cleanly"),
        Ok(Err(e)) => tracing::warn!(error = %e, "close did not finish"),
        Err(_) => tracing::warn!("close timed out"),
    }
}

#[cfg(test)]
mod tests {
    //! The restart loop on scripted guests and a broker in memory, on
    //! virtual time.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::Instant;

    use super::*;
    use crate::contract::Call;
    use crate::supervisor::test_doubles::{
        Answer, MemoryBroker, ScriptedGuest, counted, test_config, test_consumer, test_policy,
        until,
    };

    const TOPIC: &str = "/default/in";

    fn opened_sink() -> CallOutcome {
        CallOutcome::Opened(Opened::Sink(vec![test_consumer(TOPIC)]))
    }

    /// Workers that die before doing any work are restarted `max_retries`
    /// times with growing waits, then the connector stops naming the run.
    #[tokio::test(start_paused = true)]
    async fn deaths_without_progress_end_the_connector_after_max_retries() {
        let broker = MemoryBroker::new().await;
        let config = test_config("[retry]\nmax_retries = 2\nretry_backoff_ms = 100\n");
        let (policy, observability) = test_policy(config);
        let dying = || ScriptedGuest::new(|_| Answer::Die);
        let spawned = AtomicU32::new(0);
        let spawn = || {
            spawned.fetch_add(1, Ordering::Relaxed);
            async { Ok(dying()) }
        };
        let (_shutdown, watching) = watch::channel(false);
        let began = Instant::now();
        let result = run_workers(
            &broker,
            config,
            &policy,
            dying(),
            spawn,
            &watching,
            Pause::never(),
        )
        .await;
        let waited = began.elapsed().as_millis() as u64;
        match result {
            Err(Stop::Fatal(why)) => assert!(why.contains("died 3 times in a row"), "{why}"),
            other => panic!("expected the connector to stop, got {other:?}"),
        }
        assert_eq!(spawned.load(Ordering::Relaxed), 2);
        assert_eq!(
            counted(&observability, "connector_worker_restarts_total", ""),
            2
        );
        // Waits of 50-100 and 100-200 ms.
        assert!((150..=300).contains(&waited), "{waited} ms");
    }

    /// Workers that each write a batch before dying are restarted for as
    /// long as that goes on: every record is written, none dead-lettered.
    #[tokio::test(start_paused = true)]
    async fn workers_that_make_progress_are_restarted_without_end() {
        let broker = MemoryBroker::new().await;
        broker.create_topic(TOPIC);
        for i in 0..6 {
            broker.produce(TOPIC, format!("r{i}").as_bytes(), &[]);
        }
        let config = test_config(
            "[processing]\nbatch_size = 1\n\n[retry]\nmax_retries = 2\nretry_backoff_ms = 100\n",
        );
        let (policy, observability) = test_policy(config);
        // Writes one batch, then dies on the next.
        let flaky = || {
            let mut batches = 0;
            ScriptedGuest::new(move |call| match call {
                Call::Open { .. } => Answer::Outcome(opened_sink()),
                Call::ProcessBatch { .. } => {
                    batches += 1;
                    match batches {
                        1 => Answer::Outcome(CallOutcome::Processed(Vec::new())),
                        _ => Answer::Die,
                    }
                }
                _ => Answer::Outcome(CallOutcome::Done),
            })
            .with_latency(Duration::from_millis(10))
        };
        let spawned = Arc::new(AtomicU32::new(0));
        let spawn = || {
            spawned.fetch_add(1, Ordering::Relaxed);
            async { Ok(flaky()) }
        };
        let (shutdown, watching) = watch::channel(false);
        let drive = async {
            until(|| broker.acked(TOPIC).len() == 6).await;
            shutdown.send_replace(true);
        };
        let (result, ()) = tokio::join!(
            run_workers(
                &broker,
                config,
                &policy,
                flaky(),
                spawn,
                &watching,
                Pause::never()
            ),
            drive
        );
        result.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            spawned.load(Ordering::Relaxed) > 2,
            "more deaths than max_retries: {}",
            spawned.load(Ordering::Relaxed)
        );
        assert_eq!(
            counted(&observability, "connector_worker_restarts_total", ""),
            u64::from(spawned.load(Ordering::Relaxed))
        );
        assert!(broker.published("/default/t-dlq").is_empty());
    }

    /// An external system not reachable when the connector opens is waited
    /// for with the `[retry]` backoff, on the same worker; once the retries
    /// are spent the connector stops naming the guest's reason.
    #[tokio::test(start_paused = true)]
    async fn a_retryable_open_is_retried_with_backoff() {
        let broker = MemoryBroker::new().await;
        broker.create_topic(TOPIC);
        broker.produce(TOPIC, b"r", &[]);
        let config = test_config("[retry]\nmax_retries = 3\nretry_backoff_ms = 100\n");
        let (policy, observability) = test_policy(config);
        let opening = |refusals: u32| {
            let mut opens = 0;
            ScriptedGuest::new(move |call| match call {
                Call::Open { .. } => {
                    opens += 1;
                    match opens <= refusals {
                        true => Answer::Outcome(CallOutcome::Error(ConnectorError::Retryable(
                            "connection refused".into(),
                        ))),
                        false => Answer::Outcome(opened_sink()),
                    }
                }
                Call::ProcessBatch { .. } => Answer::Outcome(CallOutcome::Processed(Vec::new())),
                _ => Answer::Outcome(CallOutcome::Done),
            })
        };
        let no_spawn = || async { Err::<ScriptedGuest, _>(Stop::Fatal("no second worker".into())) };
        let (shutdown, watching) = watch::channel(false);
        let began = Instant::now();
        let drive = async {
            until(|| broker.acked(TOPIC).len() == 1).await;
            shutdown.send_replace(true);
        };
        let (result, ()) = tokio::join!(
            run_workers(
                &broker,
                config,
                &policy,
                opening(2),
                no_spawn,
                &watching,
                Pause::never()
            ),
            drive
        );
        result.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            counted(&observability, "connector_retries_total", "open"),
            2
        );
        // Waits of 50-100 and 100-200 ms before the third open.
        assert!(began.elapsed() >= Duration::from_millis(150));

        let (policy, _observability) = test_policy(config);
        let (_shutdown, watching) = watch::channel(false);
        let result = run_workers(
            &broker,
            config,
            &policy,
            opening(10),
            no_spawn,
            &watching,
            Pause::never(),
        )
        .await;
        match result {
            Err(Stop::Fatal(why)) => assert_eq!(why, "open failed: connection refused"),
            other => panic!("expected the connector to stop, got {other:?}"),
        }
    }

    /// A drain asked for while waiting to restart a worker ends the loop at
    /// once, without starting another.
    #[tokio::test(start_paused = true)]
    async fn a_drain_during_the_restart_wait_starts_no_other_worker() {
        let broker = MemoryBroker::new().await;
        let config = test_config("[retry]\nretry_backoff_ms = 10000\n");
        let (policy, _observability) = test_policy(config);
        let spawned = AtomicU32::new(0);
        let spawn = || {
            spawned.fetch_add(1, Ordering::Relaxed);
            async { Ok(ScriptedGuest::new(|_| Answer::Die)) }
        };
        let (shutdown, watching) = watch::channel(false);
        let first = ScriptedGuest::new(|_| Answer::Die);
        let began = Instant::now();
        let drive = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shutdown.send_replace(true);
        };
        let (result, ()) = tokio::join!(
            run_workers(
                &broker,
                config,
                &policy,
                first,
                spawn,
                &watching,
                Pause::never()
            ),
            drive
        );
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(spawned.load(Ordering::Relaxed), 0);
        assert_eq!(began.elapsed(), Duration::from_secs(1));
    }
}
