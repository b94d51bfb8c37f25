//! The admin services (`danube_core::admin_proto`) tests and the host use:
//! namespaces, topics ahead of producers, and what subscribes to a topic.
//! The real broker serves them on a port of their own; the test broker on
//! its one port. Answers, errors included, are the real broker's.

use danube_core::admin_proto::broker_admin_server::BrokerAdmin;
use danube_core::admin_proto::namespace_admin_server::NamespaceAdmin;
use danube_core::admin_proto::topic_admin_server::TopicAdmin;
use danube_core::admin_proto::{
    ActivateBrokerRequest, ActivateBrokerResponse, BrokerListResponse, BrokerRequest,
    BrokerResponse, ClusterBalanceRequest, ClusterBalanceResponse, DescribeTopicRequest,
    DescribeTopicResponse, DispatchStrategy, Empty, GetSubscriptionDispatchConfigRequest,
    GetSubscriptionDispatchConfigResponse, GetSubscriptionFailurePolicyRequest,
    GetSubscriptionFailurePolicyResponse, NamespaceListResponse, NamespaceRequest,
    NamespaceResponse, NewTopicRequest, PartitionedTopicRequest, PolicyResponse, RebalanceRequest,
    RebalanceResponse, SetSubscriptionDispatchConfigRequest, SetSubscriptionFailurePolicyRequest,
    SubscriptionListResponse, SubscriptionRequest, SubscriptionResponse, TopicInfoListResponse,
    TopicListResponse, TopicRequest, TopicResponse, UnloadBrokerRequest, UnloadBrokerResponse,
};
use tonic::{Request, Response, Status};

use super::BrokerService;

/// Implements an admin service: the RPCs written out, and `Unimplemented`
/// for the listed rest, which only a real deployment has a use for.
macro_rules! admin_service {
    (
        impl $service:ident { $($served:tt)* }
        not served: $($rpc:ident($request:ty) -> $response:ty;)*
    ) => {
        #[tonic::async_trait]
        impl $service for BrokerService {
            $($served)*
            $(
                async fn $rpc(&self, _: Request<$request>) -> Result<Response<$response>, Status> {
                    Err(Status::unimplemented(concat!(
                        "the test broker does not serve the admin RPC ",
                        stringify!($rpc)
                    )))
                }
            )*
        }
    };
}

/// The reliability an admin request asks for, refused as the real broker
/// refuses an unknown value.
fn reliable(dispatch_strategy: i32) -> Result<bool, Status> {
    match DispatchStrategy::try_from(dispatch_strategy) {
        Ok(DispatchStrategy::Reliable) => Ok(true),
        Ok(DispatchStrategy::NonReliable) => Ok(false),
        Err(_) => Err(Status::invalid_argument("invalid dispatch_strategy value")),
    }
}

admin_service! {
    impl BrokerAdmin {
        async fn list_namespaces(
            &self,
            _: Request<Empty>,
        ) -> Result<Response<NamespaceListResponse>, Status> {
            self.core.wait_unpaused().await;
            let namespaces = self.core.read(|state| state.topics.namespaces());
            Ok(Response::new(NamespaceListResponse { namespaces }))
        }
    }
    not served:
        list_brokers(Empty) -> BrokerListResponse;
        get_leader_broker(Empty) -> BrokerResponse;
        unload_broker(UnloadBrokerRequest) -> UnloadBrokerResponse;
        activate_broker(ActivateBrokerRequest) -> ActivateBrokerResponse;
        get_cluster_balance(ClusterBalanceRequest) -> ClusterBalanceResponse;
        trigger_rebalance(RebalanceRequest) -> RebalanceResponse;
}

admin_service! {
    impl NamespaceAdmin {
        async fn create_namespace(
            &self,
            request: Request<NamespaceRequest>,
        ) -> Result<Response<NamespaceResponse>, Status> {
            self.core.wait_unpaused().await;
            let name = request.into_inner().name;
            self.core.update(|state| state.topics.create_namespace(&name))?;
            Ok(Response::new(NamespaceResponse { success: true }))
        }
    }
    not served:
        get_namespace_topics(NamespaceRequest) -> TopicListResponse;
        get_namespace_policies(NamespaceRequest) -> PolicyResponse;
        delete_namespace(NamespaceRequest) -> NamespaceResponse;
}

admin_service! {
    impl TopicAdmin {
        async fn create_topic(
            &self,
            request: Request<NewTopicRequest>,
        ) -> Result<Response<TopicResponse>, Status> {
            self.core.wait_unpaused().await;
            let request = request.into_inner();
            let reliable = reliable(request.dispatch_strategy)?;
            self.core
                .update(|state| state.topics.create_topics(&[request.name], reliable))?;
            Ok(Response::new(TopicResponse { success: true }))
        }

        async fn create_partitioned_topic(
            &self,
            request: Request<PartitionedTopicRequest>,
        ) -> Result<Response<TopicResponse>, Status> {
            self.core.wait_unpaused().await;
            let request = request.into_inner();
            let reliable = reliable(request.dispatch_strategy)?;
            let names: Vec<String> = (0..request.partitions)
                .map(|i| format!("{}-part-{i}", request.base_name))
                .collect();
            self.core
                .update(|state| state.topics.create_topics(&names, reliable))?;
            Ok(Response::new(TopicResponse { success: true }))
        }

        /// Each name once (the real broker repeats a name once per key it
        /// stores for the subscription); none for an unknown topic.
        async fn list_subscriptions(
            &self,
            request: Request<TopicRequest>,
        ) -> Result<Response<SubscriptionListResponse>, Status> {
            self.core.wait_unpaused().await;
            let topic = request.into_inner().name;
            let subscriptions = self
                .core
                .read(|state| state.topics.subscription_names(&topic));
            Ok(Response::new(SubscriptionListResponse { subscriptions }))
        }

        /// As the real broker, an unknown topic is described, not refused:
        /// no subscriptions, non-reliable delivery, no schema.
        async fn describe_topic(
            &self,
            request: Request<DescribeTopicRequest>,
        ) -> Result<Response<DescribeTopicResponse>, Status> {
            self.core.wait_unpaused().await;
            let name = request.into_inner().name;
            let response = self.core.read(|state| {
                let (reliable, subject) = state
                    .topics
                    .dispatch_and_subject(&name)
                    .unwrap_or((false, None));
                let schema = subject.and_then(|s| state.schemas.latest(s).ok());
                DescribeTopicResponse {
                    subscriptions: state.topics.subscription_names(&name),
                    broker_id: String::new(),
                    delivery: if reliable { "Reliable" } else { "NonReliable" }.to_owned(),
                    schema_subject: subject.map(str::to_owned),
                    schema_id: schema.as_ref().map(|s| s.schema_id),
                    schema_version: schema.as_ref().map(|s| s.version),
                    schema_type: schema.as_ref().map(|s| s.schema_type.clone()),
                    compatibility_mode: schema.map(|s| s.compatibility_mode),
                    name,
                }
            });
            Ok(Response::new(response))
        }
    }
    not served:
        list_namespace_topics(NamespaceRequest) -> TopicInfoListResponse;
        list_broker_topics(BrokerRequest) -> TopicInfoListResponse;
        delete_topic(TopicRequest) -> TopicResponse;
        unload_topic(TopicRequest) -> TopicResponse;
        unsubscribe(SubscriptionRequest) -> SubscriptionResponse;
        set_subscription_failure_policy(SetSubscriptionFailurePolicyRequest) -> SubscriptionResponse;
        get_subscription_failure_policy(GetSubscriptionFailurePolicyRequest) -> GetSubscriptionFailurePolicyResponse;
        set_subscription_dispatch_config(SetSubscriptionDispatchConfigRequest) -> SubscriptionResponse;
        get_subscription_dispatch_config(GetSubscriptionDispatchConfigRequest) -> GetSubscriptionDispatchConfigResponse;
}
