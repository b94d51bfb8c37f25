//! The schema registry service. Topic-level schema administration (validation
//! policies) is an admin feature the client does not use; it is refused as
//! unimplemented rather than pretended.

use danube_core::proto::danube_schema::schema_registry_server::SchemaRegistry;
use danube_core::proto::danube_schema::{
    CheckCompatibilityRequest, CheckCompatibilityResponse, ConfigureTopicSchemaRequest,
    ConfigureTopicSchemaResponse, DeleteSchemaVersionRequest, DeleteSchemaVersionResponse,
    GetLatestSchemaRequest, GetSchemaRequest, GetSchemaResponse, GetTopicSchemaConfigRequest,
    GetTopicSchemaConfigResponse, ListSubjectsRequest, ListSubjectsResponse, ListVersionsRequest,
    ListVersionsResponse, RegisterSchemaRequest, RegisterSchemaResponse,
    SetCompatibilityModeRequest, SetCompatibilityModeResponse, UpdateTopicValidationPolicyRequest,
    UpdateTopicValidationPolicyResponse,
};
use tonic::{Request, Response, Status};

use super::BrokerService;

fn admin_only(operation: &str) -> Status {
    Status::unimplemented(format!(
        "{operation} is an admin operation the test broker does not support"
    ))
}

#[tonic::async_trait]
impl SchemaRegistry for BrokerService {
    async fn register_schema(
        &self,
        request: Request<RegisterSchemaRequest>,
    ) -> Result<Response<RegisterSchemaResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        let response = self.core.update(|state| state.schemas.register(request))?;
        Ok(Response::new(response))
    }

    async fn get_schema(
        &self,
        request: Request<GetSchemaRequest>,
    ) -> Result<Response<GetSchemaResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        Ok(Response::new(
            self.core.read(|state| state.schemas.get(&request))?,
        ))
    }

    async fn get_latest_schema(
        &self,
        request: Request<GetLatestSchemaRequest>,
    ) -> Result<Response<GetSchemaResponse>, Status> {
        self.core.wait_unpaused().await;
        let subject = request.into_inner().subject;
        Ok(Response::new(
            self.core.read(|state| state.schemas.latest(&subject))?,
        ))
    }

    async fn list_versions(
        &self,
        request: Request<ListVersionsRequest>,
    ) -> Result<Response<ListVersionsResponse>, Status> {
        self.core.wait_unpaused().await;
        let subject = request.into_inner().subject;
        Ok(Response::new(
            self.core.read(|state| state.schemas.versions(&subject))?,
        ))
    }

    async fn check_compatibility(
        &self,
        request: Request<CheckCompatibilityRequest>,
    ) -> Result<Response<CheckCompatibilityResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        Ok(Response::new(
            self.core.read(|state| state.schemas.check(&request))?,
        ))
    }

    async fn delete_schema_version(
        &self,
        request: Request<DeleteSchemaVersionRequest>,
    ) -> Result<Response<DeleteSchemaVersionResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        let response = self
            .core
            .update(|state| state.schemas.delete_version(&request))?;
        Ok(Response::new(response))
    }

    async fn set_compatibility_mode(
        &self,
        request: Request<SetCompatibilityModeRequest>,
    ) -> Result<Response<SetCompatibilityModeResponse>, Status> {
        self.core.wait_unpaused().await;
        let request = request.into_inner();
        let response = self.core.update(|state| state.schemas.set_mode(&request))?;
        Ok(Response::new(response))
    }

    async fn configure_topic_schema(
        &self,
        _request: Request<ConfigureTopicSchemaRequest>,
    ) -> Result<Response<ConfigureTopicSchemaResponse>, Status> {
        Err(admin_only("ConfigureTopicSchema"))
    }

    async fn update_topic_validation_policy(
        &self,
        _request: Request<UpdateTopicValidationPolicyRequest>,
    ) -> Result<Response<UpdateTopicValidationPolicyResponse>, Status> {
        Err(admin_only("UpdateTopicValidationPolicy"))
    }

    async fn get_topic_schema_config(
        &self,
        _request: Request<GetTopicSchemaConfigRequest>,
    ) -> Result<Response<GetTopicSchemaConfigResponse>, Status> {
        Err(admin_only("GetTopicSchemaConfig"))
    }

    async fn list_subjects(
        &self,
        _request: Request<ListSubjectsRequest>,
    ) -> Result<Response<ListSubjectsResponse>, Status> {
        self.core.wait_unpaused().await;
        Ok(Response::new(
            self.core.read(|state| state.schemas.list_subjects()),
        ))
    }
}
