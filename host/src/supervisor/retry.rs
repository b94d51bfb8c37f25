//! Exponential backoff with jitter, bounded by `[retry]`.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;
use crate::observability::{ConnectorMetrics, Status};

/// The delays of one retried operation.
pub struct Backoff {
    config: RetryConfig,
    attempt: u32,
}

impl Backoff {
    pub fn new(config: &RetryConfig) -> Backoff {
        Backoff {
            config: config.clone(),
            attempt: 0,
        }
    }

    /// The next delay, or `None` once `max_retries` delays were handed out.
    /// Delays double from `retry_backoff_ms` up to `max_backoff_ms`, each drawn
    /// between half and all of that, so that restarting peers spread out.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.attempt >= self.config.max_retries {
            return None;
        }
        let base = self
            .config
            .retry_backoff_ms
            .saturating_mul(1u64 << self.attempt.min(20))
            .min(self.config.max_backoff_ms)
            .max(1);
        self.attempt += 1;
        Some(Duration::from_millis(
            rand::rng().random_range(base.div_ceil(2)..=base),
        ))
    }

    /// The next delay, staying near the ceiling once [`next_delay`](Self::next_delay)
    /// would give up: for what is waited for rather than given up on.
    pub fn next_wait(&mut self) -> Duration {
        self.next_delay().unwrap_or_else(|| {
            let ceiling = self.config.max_backoff_ms.max(1);
            Duration::from_millis(rand::rng().random_range(ceiling.div_ceil(2)..=ceiling))
        })
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// How a connector retries: the `[retry]` bounds, and where each retry is
/// counted and shown (`/metrics`, `/health`).
#[derive(Clone)]
pub struct RetryPolicy {
    pub config: RetryConfig,
    pub metrics: ConnectorMetrics,
}

impl RetryPolicy {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(&self.config)
    }

    /// Counts one retry of `operation` and marks the connector degraded.
    pub fn note_retry(&self, operation: &str, error: &dyn std::fmt::Display) {
        self.metrics.retry(operation);
        self.metrics.set_health(
            Status::Degraded,
            format!("{operation} failed, retrying: {error}"),
        );
    }

    /// Marks the connector healthy again after retries succeeded.
    pub fn note_recovered(&self) {
        self.metrics.set_health(Status::Healthy, "running");
    }
}

/// Runs `op` until it succeeds or the retries are spent, logging and counting
/// each failure. `op` says whether an error is worth retrying.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, (E, bool)>>,
{
    let mut attempts = Attempts::new(policy, what);
    loop {
        if let Some(settled) = attempts.settle(op().await).await {
            return settled;
        }
    }
}

/// The attempts of one retried operation, for a loop that cannot hand
/// [`retry`] a closure (one whose attempts borrow something mutably, as a
/// consumer's `ack` does): the same backoff, counting and logging.
pub struct Attempts<'a> {
    policy: &'a RetryPolicy,
    what: &'a str,
    backoff: Backoff,
}

impl<'a> Attempts<'a> {
    pub fn new(policy: &'a RetryPolicy, what: &'a str) -> Attempts<'a> {
        Attempts {
            policy,
            what,
            backoff: policy.backoff(),
        }
    }

    /// What an attempt's outcome means: `Some` when it is final (a success,
    /// an error not worth retrying, or the last retry spent), `None` after
    /// waiting out the delay before the next attempt.
    pub async fn settle<T, E: std::fmt::Display>(
        &mut self,
        outcome: Result<T, (E, bool)>,
    ) -> Option<Result<T, E>> {
        match outcome {
            Ok(v) => {
                if self.backoff.attempts() > 0 {
                    self.policy.note_recovered();
                }
                Some(Ok(v))
            }
            Err((e, retryable)) => match self.backoff.next_delay().filter(|_| retryable) {
                Some(delay) => {
                    self.policy.note_retry(self.what, &e);
                    tracing::warn!(operation = self.what, error = %e, attempt = self.backoff.attempts(), retry_in_ms = delay.as_millis() as u64, "retrying");
                    tokio::time::sleep(delay).await;
                    None
                }
                None => Some(Err(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::test_doubles::{counted, test_config, test_policy};

    #[test]
    fn delays_grow_within_bounds_and_stop() {
        let mut b = Backoff::new(&RetryConfig {
            max_retries: 4,
            retry_backoff_ms: 100,
            max_backoff_ms: 300,
            ..RetryConfig::default()
        });
        let delays: Vec<u64> = std::iter::from_fn(|| b.next_delay())
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(delays.len(), 4);
        assert!((50..=100).contains(&delays[0]));
        assert!((100..=200).contains(&delays[1]));
        assert!((150..=300).contains(&delays[2]));
        assert!((150..=300).contains(&delays[3]));
        // Waiting goes on at the ceiling.
        for _ in 0..3 {
            assert!((150..=300).contains(&(b.next_wait().as_millis() as u64)));
        }
    }

    /// A policy over a fresh registry, and the registry.
    fn policy(max_retries: u32) -> (RetryPolicy, crate::observability::Observability) {
        test_policy(test_config(&format!(
            "[retry]\nmax_retries = {max_retries}\nretry_backoff_ms = 100\nmax_backoff_ms = 1000\n"
        )))
    }

    /// The operation fails `failures` times (retryably or not), then succeeds;
    /// returns the outcome, the calls made and the time waited (virtual).
    async fn run(
        policy: &RetryPolicy,
        failures: u32,
        retryable: bool,
    ) -> (Result<u32, String>, u32, Duration) {
        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let outcome = retry(policy, "publish", || {
            calls += 1;
            let call = calls;
            async move {
                match call <= failures {
                    true => Err((format!("down ({call})"), retryable)),
                    false => Ok(call),
                }
            }
        })
        .await;
        (outcome, calls, started.elapsed())
    }

    /// With time paused, the waits are exact to the backoff's bounds: two
    /// failures cost a 50-100 ms and a 100-200 ms wait, both counted.
    #[tokio::test(start_paused = true)]
    async fn retry_waits_out_the_backoff_and_counts_each_retry() {
        let (policy, observability) = policy(3);
        let (outcome, calls, waited) = run(&policy, 2, true).await;
        assert_eq!((outcome, calls), (Ok(3), 3));
        assert!(
            (150..=300).contains(&(waited.as_millis() as u64)),
            "{waited:?}"
        );
        assert_eq!(
            counted(&observability, "connector_retries_total", "publish"),
            2
        );
    }

    /// An error that is not worth retrying ends at once; one that keeps
    /// failing ends after `max_retries` waits with the last error.
    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_at_once_or_after_its_budget() {
        let (policy, observability) = policy(3);
        let (outcome, calls, waited) = run(&policy, 1, false).await;
        assert_eq!(
            (outcome, calls, waited),
            (Err("down (1)".into()), 1, Duration::ZERO)
        );
        let (outcome, calls, waited) = run(&policy, 10, true).await;
        assert_eq!((outcome, calls), (Err("down (4)".into()), 4));
        // 50-100, 100-200, 200-400 ms.
        assert!(
            (350..=700).contains(&(waited.as_millis() as u64)),
            "{waited:?}"
        );
        assert_eq!(
            counted(&observability, "connector_retries_total", "publish"),
            3
        );
    }
}
