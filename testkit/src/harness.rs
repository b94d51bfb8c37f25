//! One scenario, two brokers: [`Broker`] offers what the test broker and the
//! real broker can both do, and [`on_both_brokers!`](crate::on_both_brokers)
//! runs a scenario against each.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use danube_core::admin_proto::namespace_admin_client::NamespaceAdminClient;
use danube_core::admin_proto::topic_admin_client::TopicAdminClient;
use danube_core::admin_proto::{
    DispatchStrategy, NamespaceRequest, NewTopicRequest, PartitionedTopicRequest, TopicRequest,
};
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use crate::{RealBroker, TestBroker};

/// How often the real broker refreshes a subscription's lag gauge.
const LAG_GAUGE_REFRESH: Duration = Duration::from_millis(500);

/// Between two looks at a condition only a request can answer.
const POLL: Duration = Duration::from_millis(50);

/// Turns on the machine within one test process: a real-broker scenario
/// runs alone, test-broker tests side by side. The real broker loses what a
/// reliable subscription falls 256 messages behind on; on two cores an
/// unpaced test-broker test beside it (tens of thousands of records, a few
/// hosts) starves its consumers past that within a second, and two real
/// brokers with their hosts starve each other.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// This test's turn (see [`take_turn`]), held for its length.
#[derive(Debug)]
pub enum Turn {
    Shared(tokio::sync::RwLockReadGuard<'static, ()>),
    Alone(tokio::sync::RwLockWriteGuard<'static, ()>),
}

/// Waits for a test's turn: alone for a real-broker scenario, beside other
/// test-broker tests otherwise. [`on_both_brokers!`](crate::on_both_brokers)
/// takes it for its scenarios; any other test of a suite that has
/// real-broker scenarios takes one first thing. The lock is fair: a waiting
/// real-broker scenario goes before test-broker tests that come after it.
pub async fn take_turn(kind: BrokerKind) -> Turn {
    match kind {
        BrokerKind::Test => Turn::Shared(MACHINE.read().await),
        BrokerKind::Real => Turn::Alone(MACHINE.write().await),
    }
}

/// Which broker a scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// The in-memory [`TestBroker`].
    Test,
    /// The upstream broker from `DANUBE_BROKER_BIN`, as a [`RealBroker`].
    Real,
}

/// A running broker of either kind.
#[derive(Debug)]
pub enum Broker {
    Test(TestBroker),
    Real(RealBroker),
}

impl Broker {
    pub async fn start(kind: BrokerKind) -> anyhow::Result<Broker> {
        Ok(match kind {
            BrokerKind::Test => Broker::Test(TestBroker::start().await?),
            BrokerKind::Real => Broker::Real(RealBroker::start().await?),
        })
    }

    pub fn kind(&self) -> BrokerKind {
        match self {
            Broker::Test(_) => BrokerKind::Test,
            Broker::Real(_) => BrokerKind::Real,
        }
    }

    /// The URL for `DanubeClient::builder().service_url(..)`.
    pub fn url(&self) -> String {
        match self {
            Broker::Test(broker) => broker.url(),
            Broker::Real(broker) => broker.url(),
        }
    }

    /// Where the admin services answer: the client URL on the test broker,
    /// a port of its own on the real one.
    pub fn admin_url(&self) -> String {
        match self {
            Broker::Test(broker) => broker.url(),
            Broker::Real(broker) => broker.admin_url(),
        }
    }

    /// The broker's Prometheus page.
    pub fn metrics_url(&self) -> String {
        match self {
            Broker::Test(broker) => broker.metrics_url(),
            Broker::Real(broker) => broker.metrics_url(),
        }
    }

    /// The test broker, for what only it can do: inject faults, inspect
    /// stored messages.
    pub fn as_test(&self) -> Option<&TestBroker> {
        match self {
            Broker::Test(broker) => Some(broker),
            Broker::Real(_) => None,
        }
    }

    async fn namespace_admin(&self) -> Result<NamespaceAdminClient<Channel>, Status> {
        NamespaceAdminClient::connect(self.admin_url())
            .await
            .map_err(|e| unreachable_admin(&self.admin_url(), &e))
    }

    async fn topic_admin(&self) -> Result<TopicAdminClient<Channel>, Status> {
        TopicAdminClient::connect(self.admin_url())
            .await
            .map_err(|e| unreachable_admin(&self.admin_url(), &e))
    }

    /// `CreateNamespace`; topics can only be created in a namespace that
    /// exists (`default` and `system` do).
    pub async fn create_namespace(&self, name: &str) -> Result<(), Status> {
        let request = NamespaceRequest { name: name.into() };
        self.namespace_admin()
            .await?
            .create_namespace(request)
            .await
            .map(drop)
    }

    /// Creates a topic ahead of any producer through the admin API (see
    /// [`create_topic`]).
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        reliable: bool,
    ) -> Result<(), Status> {
        create_topic(&self.admin_url(), topic, partitions, reliable).await
    }

    /// The subscriptions of one topic (one partition of a partitioned
    /// topic), each once and sorted: the real broker lists a name once per
    /// key it keeps for the subscription.
    pub async fn subscriptions(&self, topic: &str) -> Result<Vec<String>, Status> {
        let request = TopicRequest { name: topic.into() };
        let listed = self
            .topic_admin()
            .await?
            .list_subscriptions(request)
            .await?
            .into_inner()
            .subscriptions;
        Ok(listed
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// Waits until `subscription` has acknowledged every message of each of
    /// `topics` (partitions of a partitioned topic), or fails with what is
    /// left when `deadline` passes. The test broker knows exactly. The real
    /// broker only exports `danube_subscription_lag_messages`, refreshed
    /// every 500 ms and reading 0 until the subscription's first ack: so
    /// there the lag must stay 0 over two refreshes, and the wait only tells
    /// once the subscription has acknowledged something.
    pub async fn wait_acked(
        &self,
        topics: &[String],
        subscription: &str,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let settle = match self {
            Broker::Test(_) => Duration::ZERO,
            Broker::Real(_) => 2 * LAG_GAUGE_REFRESH,
        };
        let end = Instant::now() + deadline;
        let mut zero_since = None;
        loop {
            let mut backlogs = Vec::new();
            for topic in topics {
                backlogs.push(self.backlog(topic, subscription).await?);
            }
            if backlogs.iter().all(|b| *b == Some(0)) {
                if zero_since.get_or_insert_with(Instant::now).elapsed() >= settle {
                    return Ok(());
                }
            } else {
                zero_since = None;
            }
            if Instant::now() >= end {
                bail!(
                    "after {deadline:?}, unacknowledged on {subscription} of {topics:?}: {backlogs:?} (None: no such subscription)"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Messages of a topic (one partition) that `subscription` has yet to
    /// acknowledge; `None` when there is no such subscription.
    async fn backlog(&self, topic: &str, subscription: &str) -> anyhow::Result<Option<u64>> {
        match self {
            Broker::Test(broker) => Ok(broker.subscription(topic, subscription).map(|s| {
                let stored = broker.messages(topic).len() as u64;
                stored - s.cursor + (s.unacked + s.redelivery_pending) as u64
            })),
            Broker::Real(broker) => {
                let metrics = broker.scrape_metrics().await?;
                let labels = [
                    format!("topic=\"{topic}\""),
                    format!("subscription=\"{subscription}\""),
                ];
                let value = metrics.lines().find_map(|line| {
                    let (series, value) = line.rsplit_once(' ')?;
                    let labelled = series.strip_prefix("danube_subscription_lag_messages{")?;
                    let labelled = labelled.strip_suffix('}')?;
                    let mine = labels
                        .iter()
                        .all(|label| labelled.split(',').any(|l| l == label));
                    mine.then(|| value.parse::<f64>().ok()).flatten()
                });
                Ok(value.map(|lag| lag as u64))
            }
        }
    }
}

/// Creates a topic ahead of any producer through the admin API of the
/// broker at `admin_url` (either kind), so that consumers can subscribe
/// first: `partitions` > 1 makes `<topic>-part-0..N-1`
/// (`CreatePartitionedTopic`), otherwise a plain topic (`CreateTopic`).
pub async fn create_topic(
    admin_url: &str,
    topic: &str,
    partitions: u32,
    reliable: bool,
) -> Result<(), Status> {
    let dispatch_strategy = if reliable {
        DispatchStrategy::Reliable
    } else {
        DispatchStrategy::NonReliable
    } as i32;
    let mut admin = TopicAdminClient::connect(admin_url.to_string())
        .await
        .map_err(|e| unreachable_admin(admin_url, &e))?;
    let created = if partitions > 1 {
        let request = PartitionedTopicRequest {
            base_name: topic.into(),
            partitions,
            schema_subject: None,
            dispatch_strategy,
        };
        admin.create_partitioned_topic(request).await
    } else {
        let request = NewTopicRequest {
            name: topic.into(),
            schema_subject: None,
            dispatch_strategy,
        };
        admin.create_topic(request).await
    };
    created.map(drop)
}

fn unreachable_admin(url: &str, error: &tonic::transport::Error) -> Status {
    Status::unavailable(format!("cannot reach the admin API at {url}: {error}"))
}

/// Polls an asynchronous `condition` until it holds or `deadline` passes;
/// for conditions only a request can answer (an admin call, a scrape).
pub async fn wait_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Turns each scenario `async fn name(broker: Broker) { .. }` into a module
/// `name` with two tests: `test_broker`, against a [`TestBroker`], and
/// `real_broker`, against a [`RealBroker`]. The real-broker test is compiled
/// to run only with `cfg(real_broker)`, which the build script of the crate
/// using this macro sets when `DANUBE_BROKER_BIN` is set; otherwise it is
/// listed as ignored, with the reason.
///
/// ```ignore
/// danube_testkit::on_both_brokers! {
///     /// Doc comments go to the module.
///     async fn producers_create_topics(broker: Broker) {
///         // ... broker.url(), broker.create_topic(..), broker.as_test() ...
///     }
/// }
/// ```
#[macro_export]
macro_rules! on_both_brokers {
    ($(
        $(#[$attr:meta])*
        async fn $name:ident($broker:ident: Broker) $body:block
    )*) => {$(
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn scenario($broker: $crate::Broker) $body

            async fn run(kind: $crate::BrokerKind) {
                let _turn = $crate::take_turn(kind).await;
                let broker = $crate::Broker::start(kind)
                    .await
                    .unwrap_or_else(|e| panic!("the {kind:?} broker did not start: {e:#}"));
                scenario(broker).await;
            }

            #[::tokio::test(flavor = "multi_thread")]
            async fn test_broker() {
                run($crate::BrokerKind::Test).await;
            }

            #[::tokio::test(flavor = "multi_thread")]
            #[cfg_attr(
                not(real_broker),
                ignore = "needs the real Danube broker: set DANUBE_BROKER_BIN (README: Testing against the real broker)"
            )]
            async fn real_broker() {
                run($crate::BrokerKind::Real).await;
            }
        }
    )*};
}
