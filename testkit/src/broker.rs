//! The broker's shared core: its state behind one lock, the change signal
//! tests wait on, the pause switch and the timer that drives ack timeouts.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::BrokerConfig;
use crate::schema::SchemaRegistry;
use crate::topics::{Limits, Topics};

/// Everything the broker knows; it survives `stop` and `restart`.
#[derive(Debug)]
pub(crate) struct State {
    pub topics: Topics,
    pub schemas: SchemaRegistry,
}

#[derive(Debug)]
pub(crate) struct Core {
    state: Mutex<State>,
    pub config: BrokerConfig,
    /// The broker's own URL, as handed out by lookups.
    pub url: String,
    /// Bumped after every change, so tests can wait for a condition instead of sleeping.
    changes: watch::Sender<u64>,
    paused: watch::Sender<bool>,
    /// Wakes the timer task when an earlier deadline appears.
    timer: Notify,
    /// `ReceiveMessages` calls still to refuse, and with what.
    refused_receives: Mutex<Option<(usize, tonic::Code)>>,
}

impl Core {
    pub(crate) fn new(config: BrokerConfig, url: String) -> Self {
        let limits = Limits {
            max_unacked_messages: config.max_unacked_messages.max(1),
            ack_timeout: config.ack_timeout,
            max_payload_bytes: config.max_payload_bytes,
        };
        Core {
            state: Mutex::new(State {
                topics: Topics::new(limits, url.clone()),
                schemas: SchemaRegistry::default(),
            }),
            config,
            url,
            changes: watch::Sender::new(0),
            paused: watch::Sender::new(false),
            timer: Notify::new(),
            refused_receives: Mutex::new(None),
        }
    }

    /// A panic elsewhere must not wedge every later RPC, and the state
    /// machine never leaves half-applied changes behind a panic, so a
    /// poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a change and tells the timer and any waiting test about it.
    pub(crate) fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> R {
        let (result, wake) = {
            let mut state = self.lock();
            let result = change(&mut state);
            (result, state.topics.take_timer_wake())
        };
        if wake {
            self.timer.notify_one();
        }
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
        result
    }

    pub(crate) fn read<R>(&self, query: impl FnOnce(&State) -> R) -> R {
        query(&self.lock())
    }

    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    pub(crate) fn refuse_receives(&self, count: usize, code: tonic::Code) {
        *self
            .refused_receives
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (count > 0).then_some((count, code));
    }

    /// Takes one refusal, if any are left: the status to fail the call with.
    pub(crate) fn next_refused_receive(&self) -> Option<tonic::Status> {
        let mut refused = self
            .refused_receives
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (left, code) = refused.as_mut()?;
        let status = tonic::Status::new(*code, "refused by the test broker");
        *left -= 1;
        if *left == 0 {
            *refused = None;
        }
        Some(status)
    }

    /// Returns once the broker is not paused; RPCs call it first.
    pub(crate) async fn wait_unpaused(&self) {
        let mut paused = self.paused.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = paused.wait_for(|paused| !paused).await;
    }

    /// Redelivers timed-out and due nacked messages, sleeping until the next
    /// deadline in between, until `stop` is cancelled.
    pub(crate) async fn run_timer(&self, stop: CancellationToken) {
        /// How long to sleep when nothing is in flight; any new deadline wakes us.
        const IDLE: Duration = Duration::from_secs(3600);
        loop {
            let next = self.update(|state| state.topics.expire(std::time::Instant::now()));
            let until = next.map_or_else(|| Instant::now() + IDLE, Instant::from_std);
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.timer.notified() => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }
}
