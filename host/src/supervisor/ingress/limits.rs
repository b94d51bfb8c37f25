//! `[rate_limit]` and each path's own limit: over all senders, per sender
//! address, and per path (what the connector's `open` asked for). Above
//! any of them a request is answered 429 with the wait in `Retry-After`,
//! before its body is read. Token buckets from `governor`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::contract::IngressRoute;

/// Per-sender buckets are swept of idle senders every this many checks, so
/// that many senders do not grow the host without bound.
const SWEEP_EVERY: u32 = 4096;

pub struct Limits {
    all: Option<DefaultDirectRateLimiter>,
    per_sender: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_path: HashMap<String, DefaultDirectRateLimiter>,
    checks: AtomicU32,
    clock: DefaultClock,
}

/// `rate` requests per second with `burst` at once; `None` for a rate of 0.
fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

impl Limits {
    /// The limits of `config` and of `routes`; the error names the key.
    pub fn new(
        config: Option<&RateLimitConfig>,
        routes: &[IngressRoute],
    ) -> Result<Limits, String> {
        let (all, per_sender) = match config {
            None => (None, None),
            Some(c) => {
                let per_sender = match (c.per_ip_enabled, c.per_ip_requests_per_second) {
                    (false, _) => None,
                    (true, Some(rate)) if rate > 0 => quota(rate, rate),
                    (true, _) => {
                        return Err(
                            "[rate_limit] per_ip_enabled needs per_ip_requests_per_second (at least 1)"
                                .into(),
                        );
                    }
                };
                (
                    quota(c.requests_per_second, c.burst_size).map(RateLimiter::direct),
                    per_sender.map(RateLimiter::keyed),
                )
            }
        };
        let per_path = routes
            .iter()
            .filter_map(|r| {
                let limit = quota(r.requests_per_second?, r.burst.unwrap_or(0))?;
                Some((r.path.clone(), RateLimiter::direct(limit)))
            })
            .collect();
        Ok(Limits {
            all,
            per_sender,
            per_path,
            checks: AtomicU32::new(0),
            clock: DefaultClock::default(),
        })
    }

    /// Whether a request from `sender` to `path` may come now; else how
    /// long to wait.
    pub fn check(&self, path: &str, sender: IpAddr) -> Result<(), Duration> {
        let now = self.clock.now();
        if let Some(limit) = self.per_path.get(path) {
            limit.check().map_err(|n| n.wait_time_from(now))?;
        }
        if let Some(limit) = &self.per_sender {
            if self
                .checks
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(SWEEP_EVERY)
            {
                limit.retain_recent();
                limit.shrink_to_fit();
            }
            limit
                .check_key(&sender)
                .map_err(|n| n.wait_time_from(now))?;
        }
        if let Some(limit) = &self.all {
            limit.check().map_err(|n| n.wait_time_from(now))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, rate: Option<u32>) -> IngressRoute {
        IngressRoute {
            path: path.into(),
            requests_per_second: rate,
            burst: rate,
        }
    }

    #[test]
    fn a_burst_above_each_limit_is_refused_with_a_wait() {
        let config = RateLimitConfig {
            requests_per_second: 10,
            burst_size: 5,
            per_ip_enabled: true,
            per_ip_requests_per_second: Some(3),
        };
        let limits =
            Limits::new(Some(&config), &[route("/slow", Some(1)), route("/a", None)]).unwrap();
        let (one, two): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        // Per sender: 3 at once.
        let taken = (0..10).filter(|_| limits.check("/a", one).is_ok()).count();
        assert_eq!(taken, 3);
        // Over all: 5 at once, so the second sender gets the 2 left.
        let taken = (0..10).filter(|_| limits.check("/a", two).is_ok()).count();
        assert_eq!(taken, 2);
        let wait = limits.check("/a", two).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Per path: 1 at once.
        let limits = Limits::new(None, &[route("/slow", Some(1))]).unwrap();
        assert!(limits.check("/slow", one).is_ok());
        assert!(limits.check("/slow", one).is_err());
        assert!(limits.check("/other", one).is_ok());
    }

    #[test]
    fn per_sender_limits_need_their_rate() {
        let config = RateLimitConfig {
            per_ip_enabled: true,
            ..RateLimitConfig::default()
        };
        let e = Limits::new(Some(&config), &[]).err().unwrap();
        assert!(e.contains("per_ip_requests_per_second"), "{e}");
    }
}
