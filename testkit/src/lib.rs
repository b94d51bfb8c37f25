//! An in-memory broker that speaks the Danube broker's gRPC protocol, so that
//! code using the real `danube-client` can be tested without a real broker.
//!
//! **For tests and development only.** Nothing is persisted, nothing is
//! authenticated, and the whole state sits behind one lock.
//!
//! The real broker is the reference: [`RealBroker`] runs it for tests, and
//! [`on_both_brokers!`] runs one scenario against a [`Broker`] of each kind.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use danube_testkit::TestBroker;
//!
//! let broker = TestBroker::start().await?;
//! // point danube-client at broker.url(), produce, then:
//! let arrived = broker
//!     .wait_for(Duration::from_secs(5), |b| b.messages("/default/orders").len() == 3)
//!     .await;
//! assert!(arrived);
//! # Ok(())
//! # }
//! ```

mod broker;
mod exporter;
mod harness;
mod real;
mod schema;
mod server;
mod services;
mod tap;
mod topics;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::Core;
pub use crate::harness::{Broker, BrokerKind, Turn, create_topic, take_turn, wait_until};
pub use crate::real::RealBroker;
use crate::server::Connections;
pub use crate::tap::{Tap, TapMessage};
pub use crate::topics::{StoredMessage, SubscriptionStats};

/// Settings of a [`TestBroker`]; the defaults match the real broker's.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where to listen; port 0 picks a free port.
    pub addr: SocketAddr,
    /// How many delivered but unacked messages a reliable subscription may
    /// have out at once.
    pub max_unacked_messages: usize,
    /// How long a delivered message may stay unacked before it is redelivered.
    pub ack_timeout: Duration,
    /// Largest payload accepted; larger sends fail with `InvalidArgument`.
    pub max_payload_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_unacked_messages: 10,
            ack_timeout: Duration::from_secs(30),
            max_payload_bytes: 5 * 1024 * 1024,
        }
    }
}

/// A running test broker. Dropping it stops it.
#[derive(Debug)]
pub struct TestBroker {
    core: Arc<Core>,
    addr: SocketAddr,
    /// Where the Prometheus page is served.
    metrics_addr: SocketAddr,
    routes: tonic::service::Routes,
    connections: Arc<Connections>,
    /// The accept loop while serving, `None` while stopped.
    listening: Mutex<Option<Listening>>,
    /// Cancelled on drop: ends the timer, the accept loop and all connections.
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct Listening {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TestBroker {
    /// Starts a broker with default settings on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<TestBroker> {
        Self::start_with(BrokerConfig::default()).await
    }

    pub async fn start_with(config: BrokerConfig) -> anyhow::Result<TestBroker> {
        let listener = server::bind(config.addr)?;
        let addr = listener.local_addr()?;
        let core = Arc::new(Core::new(config, format!("http://{addr}")));
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let core = Arc::clone(&core);
            let stop = shutdown.clone();
            async move { core.run_timer(stop).await }
        });
        let metrics_addr = exporter::serve(Arc::clone(&core), addr, shutdown.child_token()).await?;
        let broker = TestBroker {
            routes: services::routes(Arc::clone(&core)),
            connections: Arc::new(Connections::new(shutdown.clone())),
            core,
            addr,
            metrics_addr,
            listening: Mutex::new(None),
            shutdown,
        };
        *broker.listening.lock().await = Some(broker.listen(listener));
        Ok(broker)
    }

    fn listen(&self, listener: tokio::net::TcpListener) -> Listening {
        let stop = self.shutdown.child_token();
        let task = tokio::spawn(server::accept_loop(
            listener,
            self.routes.clone(),
            Arc::clone(&self.connections),
            stop.clone(),
        ));
        Listening { stop, task }
    }

    /// Creates a topic ahead of any producer, as an administrator would, so
    /// that consumers can subscribe before the first message is published.
    /// `partitions` > 1 creates `<topic>-part-0..N-1`. Fails as the admin
    /// API's `CreateTopic` does: for a topic that exists, or a namespace that
    /// does not.
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        reliable: bool,
    ) -> Result<(), tonic::Status> {
        let names: Vec<String> = if partitions > 1 {
            (0..partitions)
                .map(|i| format!("{topic}-part-{i}"))
                .collect()
        } else {
            vec![topic.to_owned()]
        };
        self.core
            .update(|state| state.topics.create_topics(&names, reliable))
    }

    /// Creates a namespace, as the admin API's `CreateNamespace` does. A
    /// fresh broker has `default` and `system`.
    pub fn create_namespace(&self, name: &str) -> Result<(), tonic::Status> {
        self.core
            .update(|state| state.topics.create_namespace(name))
    }

    /// The URL to give `DanubeClient::builder().service_url(..)`.
    pub fn url(&self) -> String {
        self.core.url.clone()
    }

    /// The broker's Prometheus page, under the real broker's metric names:
    /// `danube_subscription_lag_messages` (reliable subscriptions: messages
    /// not acknowledged yet), `danube_subscription_active_consumers` and
    /// `danube_topic_messages_in_total`. It keeps serving while the broker
    /// is stopped.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr)
    }

    /// Stops serving as a crashed broker would: the port refuses connections
    /// and open connections are closed. Topics, subscriptions and messages
    /// are kept for [`restart`](Self::restart).
    pub async fn stop(&self) {
        if let Some(listening) = self.listening.lock().await.take() {
            listening.stop.cancel();
            // The task only ends by returning; a join error would mean it
            // panicked, and then the listener is gone all the same.
            let _ = listening.task.await;
        }
        self.connections.close_all_and_wait().await;
    }

    /// Serves again on the same port, with everything stored before `stop`.
    /// Does nothing if the broker is serving.
    pub async fn restart(&self) -> anyhow::Result<()> {
        let mut listening = self.listening.lock().await;
        if listening.is_none() {
            *listening = Some(self.listen(server::bind(self.addr)?));
        }
        Ok(())
    }

    /// Closes every open connection now, ending all consumer streams; the
    /// broker keeps serving, so clients must reconnect.
    pub fn drop_connections(&self) {
        self.connections.close_all();
    }

    /// The next `count` `ReceiveMessages` calls (a consumer opening its
    /// message stream) fail with `code`, as a broker refusing streams would:
    /// with [`drop_connections`](Self::drop_connections), the way to see what
    /// a client does when its stream cannot be opened again.
    pub fn refuse_receives(&self, count: usize, code: tonic::Code) {
        self.core.refuse_receives(count, code);
    }

    /// While paused, every RPC waits (it does not fail) until unpaused.
    /// Streams already open stay open.
    pub fn set_paused(&self, paused: bool) {
        self.core.set_paused(paused);
    }

    /// Names of all topics, partitions included, in order.
    pub fn topic_names(&self) -> Vec<String> {
        self.core.read(|state| state.topics.topic_names())
    }

    /// Everything stored on a topic (one partition of a partitioned topic),
    /// in offset order; empty for an unknown topic.
    pub fn messages(&self, topic: &str) -> Vec<StoredMessage> {
        self.core.read(|state| state.topics.messages(topic))
    }

    pub fn subscription(&self, topic: &str, subscription: &str) -> Option<SubscriptionStats> {
        self.core
            .read(|state| state.topics.subscription_stats(topic, subscription))
    }

    /// Waits until `condition` holds, re-checking after every change in the
    /// broker; returns `false` if `deadline` passes first.
    pub async fn wait_for<F: Fn(&TestBroker) -> bool>(
        &self,
        deadline: Duration,
        condition: F,
    ) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        let mut changes = self.core.changes();
        loop {
            changes.borrow_and_update();
            if condition(self) {
                return true;
            }
            match tokio::time::timeout_at(until, changes.changed()).await {
                Ok(Ok(())) => {}
                // Deadline passed (or the broker core is gone): one last look.
                _ => return condition(self),
            }
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
