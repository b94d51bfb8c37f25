//! The schema registry through `danube-client`: `[[schemas]]` registered or
//! checked at start, the version each source topic's producers attach, and
//! the schema of each consumed message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use danube_client::{SchemaInfo, SchemaRegistryClient, SchemaType as ClientType};
use danube_core::proto::SchemaReference;
use danube_core::proto::schema_reference::VersionRef;
use tonic::Code;

use super::Codec;
use crate::config::{ConnectorConfig, SchemaConfig, SchemaType, VersionStrategy};
use crate::contract::{ProducerConfig, SchemaRef};
use crate::supervisor::danube::{Danube, DanubeFailure, bounded, split};
use crate::supervisor::retry::{RetryPolicy, retry};

/// Why the schemas stop a connector.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A schema file, a subject or a version does not fit: the configuration
    /// or the registry must change before the connector can start.
    #[error("{0}")]
    Refused(String),
    /// The registry did not answer, after retries.
    #[error("the schema registry is unreachable: {0}")]
    Unreachable(String),
}

/// The registry calls of one connector, bounded in time and retried.
#[derive(Clone)]
pub struct Registry {
    client: SchemaRegistryClient,
    policy: RetryPolicy,
    limit: Duration,
}

impl Registry {
    pub fn new(danube: &impl Danube, policy: &RetryPolicy, limit: Duration) -> Registry {
        Registry {
            client: danube.schema_registry(),
            policy: policy.clone(),
            limit,
        }
    }

    /// Runs one registry call, retrying what is temporary. `Ok(Err(_))` is the
    /// registry's own refusal (with its status code), for the caller to explain.
    async fn call<T, F>(
        &self,
        what: &str,
        op: impl Fn() -> F,
    ) -> Result<Result<T, DanubeFailure>, SchemaError>
    where
        F: Future<Output = Result<T, danube_client::errors::DanubeError>>,
    {
        let result = retry(&self.policy, what, || async {
            bounded(self.limit, op()).await.map_err(split)
        })
        .await;
        match result {
            Err(e) if e.retryable => Err(SchemaError::Unreachable(e.message)),
            other => Ok(other),
        }
    }

    /// Registers a schema file under its subject (a new version when it
    /// changed); a refusal names the subject and what to do.
    async fn register(
        &self,
        entry: &SchemaConfig,
        file: &Path,
        definition: Vec<u8>,
        connector: &str,
    ) -> Result<(), SchemaError> {
        let schema_type = client_type(entry.schema_type);
        let registered = self
            .call("register_schema", || {
                self.client
                    .register_schema(entry.subject.clone())
                    .with_type(schema_type)
                    .with_schema_data(definition.clone())
                    .with_created_by(connector.to_string())
                    .execute()
            })
            .await?;
        registered.map(drop).map_err(|e| {
            // Danube answers Internal "... is not compatible with subject".
            let incompatible = e.code == Some(Code::FailedPrecondition)
                || e.message.contains("is not compatible with subject");
            let advice = if incompatible {
                "make the schema compatible with the subject's latest version, register it under a new subject, or change the subject's compatibility mode in the registry"
            } else {
                "check the schema file and the registry"
            };
            let what = match file.as_os_str().is_empty() {
                true => format!("a {} schema", config_type_name(entry.schema_type)),
                false => file.display().to_string(),
            };
            SchemaError::Refused(format!(
                "schema subject '{}': the registry refused {what} as its next version: {}; {advice}",
                entry.subject, e.message
            ))
        })
    }

    /// The version of `subject` that `strategy` selects.
    async fn resolve(
        &self,
        subject: &str,
        strategy: VersionStrategy,
    ) -> Result<SchemaInfo, SchemaError> {
        let latest = self
            .call("get_latest_schema", || self.client.get_latest_schema(subject))
            .await?
            .map_err(|e| match e.code {
                Some(Code::NotFound) => SchemaError::Refused(format!(
                    "schema subject '{subject}' is not registered; register it, or set auto_register = true in its [[schemas]] entry"
                )),
                _ => SchemaError::Refused(format!("schema subject '{subject}': {}", e.message)),
            })?;
        match strategy {
            VersionStrategy::Latest => Ok(latest),
            VersionStrategy::Minimum(minimum) if latest.version < minimum => {
                Err(SchemaError::Refused(format!(
                    "schema subject '{subject}': the latest version is {}, older than version_strategy = {{ minimum = {minimum} }}; register a newer version or lower the minimum",
                    latest.version
                )))
            }
            VersionStrategy::Minimum(_) => Ok(latest),
            VersionStrategy::Pinned(pinned) if pinned == latest.version => Ok(latest),
            VersionStrategy::Pinned(pinned) => self
                .version(latest.schema_id, pinned)
                .await?
                .map_err(|why| {
                    SchemaError::Refused(format!(
                        "schema subject '{subject}': version_strategy = {{ pinned = {pinned} }}, but {why} (the latest version is {}); pin a registered version",
                        latest.version
                    ))
                }),
        }
    }

    /// One version of a subject by the subject's id; `Ok(Err(why))` when the
    /// registry has no such version.
    async fn version(
        &self,
        schema_id: u64,
        version: u32,
    ) -> Result<Result<SchemaInfo, String>, SchemaError> {
        let found = self
            .call("get_schema", || {
                self.client.get_schema_version(schema_id, Some(version))
            })
            .await?;
        Ok(found.map_err(|e| match e.code {
            Some(Code::NotFound) => {
                format!("the registry has no version {version} of schema id {schema_id}")
            }
            _ => e.message,
        }))
    }
}

fn client_type(schema_type: SchemaType) -> ClientType {
    match schema_type {
        SchemaType::JsonSchema => ClientType::JsonSchema,
        SchemaType::String => ClientType::String,
        SchemaType::Bytes => ClientType::Bytes,
        SchemaType::Number => ClientType::Number,
        SchemaType::Avro => ClientType::Avro,
        SchemaType::Protobuf => ClientType::Protobuf,
    }
}

fn config_type_name(schema_type: SchemaType) -> &'static str {
    client_type(schema_type).as_str()
}

/// The schema a source topic's producers attach, and its codec.
#[derive(Debug)]
pub struct TopicSchema {
    pub reference: SchemaReference,
    pub codec: Codec,
}

/// Reads a `[[schemas]]` entry's `schema_file` (see [`locate_schema_file`];
/// none for `string`, `bytes` and `number`) and checks that it is a schema of its `schema_type`:
/// the file's path and its bytes, or why not.
pub fn read_schema_file(
    config: &ConnectorConfig,
    entry: &SchemaConfig,
) -> Result<(PathBuf, Vec<u8>), String> {
    let subject = &entry.subject;
    if entry.schema_file.as_os_str().is_empty() {
        return match entry.schema_type {
            // Nothing to define: the type says it all.
            SchemaType::String | SchemaType::Bytes | SchemaType::Number => {
                Ok((PathBuf::new(), Vec::new()))
            }
            _ => Err(format!(
                "schema subject '{subject}': schema_file is empty; a {} schema needs its definition file",
                config_type_name(entry.schema_type)
            )),
        };
    }
    let file = locate_schema_file(config, &entry.schema_file);
    let definition = std::fs::read(&file).map_err(|e| {
        format!(
            "schema subject '{subject}': cannot read schema_file {}: {e}",
            file.display()
        )
    })?;
    Codec::new(entry.schema_type, &definition)
        .map_err(|e| format!("schema subject '{subject}': {} is {e}", file.display()))?;
    Ok((file, definition))
}

/// A relative `schema_file` is looked for beside the configuration file,
/// then (as danube-connect resolves it) in the working directory.
fn locate_schema_file(config: &ConnectorConfig, schema_file: &Path) -> PathBuf {
    let beside_config = config
        .path
        .parent()
        .unwrap_or(Path::new("."))
        .join(schema_file);
    if schema_file.is_absolute() || beside_config.exists() || !schema_file.exists() {
        return beside_config;
    }
    tracing::info!(
        schema_file = %schema_file.display(),
        "schema_file is not beside the configuration file; using the one in the working directory"
    );
    schema_file.to_path_buf()
}

/// The schemas of a source's topics, keyed by topic.
#[derive(Debug, Default)]
pub struct SourceSchemas {
    topics: HashMap<String, TopicSchema>,
}

impl SourceSchemas {
    /// Registers (or, without `auto_register`, checks) every `[[schemas]]`
    /// entry, then resolves the version each producer attaches: the entry's
    /// for its topic, else the latest of the subject the connector named.
    /// Payloads are checked against that version's definition, as the
    /// registry holds it.
    pub async fn prepare(
        registry: &Registry,
        config: &ConnectorConfig,
        producers: &[ProducerConfig],
    ) -> Result<SourceSchemas, SchemaError> {
        for entry in &config.host.schemas {
            let (file, definition) =
                read_schema_file(config, entry).map_err(SchemaError::Refused)?;
            if entry.auto_register {
                registry
                    .register(entry, &file, definition, &config.host.connector_name)
                    .await?;
            }
        }

        let mut topics = HashMap::new();
        for producer in producers {
            let entry = config
                .host
                .schemas
                .iter()
                .find(|s| s.topic == producer.topic);
            let (subject, strategy) = match (entry, &producer.schema_subject) {
                (Some(entry), named) => {
                    if let Some(named) = named.as_ref().filter(|n| **n != entry.subject) {
                        tracing::warn!(topic = %producer.topic, connector_subject = %named, subject = %entry.subject, "the [[schemas]] entry overrides the schema subject the connector named");
                    }
                    (entry.subject.clone(), entry.version_strategy)
                }
                (None, Some(named)) => (named.clone(), VersionStrategy::Latest),
                (None, None) => continue,
            };
            let info = registry.resolve(&subject, strategy).await?;
            let codec =
                Codec::registered(&info.schema_type, &info.schema_definition).map_err(|e| {
                    SchemaError::Refused(format!(
                        "schema subject '{subject}' version {}: {e}",
                        info.version
                    ))
                })?;
            tracing::info!(topic = %producer.topic, subject = %subject, version = info.version, schema_type = %info.schema_type, "schema attached");
            let version_ref = match strategy {
                VersionStrategy::Latest => VersionRef::UseLatest(true),
                VersionStrategy::Pinned(v) => VersionRef::PinnedVersion(v),
                VersionStrategy::Minimum(v) => VersionRef::MinVersion(v),
            };
            let reference = SchemaReference {
                subject,
                version_ref: Some(version_ref),
            };
            topics.insert(producer.topic.clone(), TopicSchema { reference, codec });
        }
        for entry in &config.host.schemas {
            if !producers.iter().any(|p| p.topic == entry.topic) {
                tracing::warn!(topic = %entry.topic, subject = %entry.subject, "the connector does not publish to this [[schemas]] topic");
            }
        }
        Ok(SourceSchemas { topics })
    }

    pub fn get(&self, topic: &str) -> Option<&TopicSchema> {
        self.topics.get(topic)
    }
}

/// A consumed message's schema: its subject and version, and its codec.
#[derive(Debug)]
pub struct MessageSchema {
    pub reference: SchemaRef,
    pub codec: Codec,
}

/// What a sink route asks of the schemas of the messages it consumes.
#[derive(Debug, Clone)]
pub struct SchemaRules {
    /// Messages of another subject (or none) are rejected.
    pub expected_subject: Option<String>,
    /// Avro payloads are handed over as JSON; otherwise as published, not
    /// decoded (nor checked: the source side encoded them against their
    /// schema).
    pub decode_avro: bool,
}

/// What a sink route makes of a consumed message.
pub enum Verdict {
    /// Hand it to the sink, with its schema and (for Avro) its payload as JSON.
    Pass {
        schema: Option<SchemaRef>,
        decoded: Option<Vec<u8>>,
    },
    /// It cannot go to this sink: why.
    Reject(String),
}

/// The schemas of consumed messages, looked up once per schema version.
pub struct MessageSchemas {
    registry: Registry,
    /// By (schema id, version); `Err` when the registry has no such version.
    known: HashMap<(u64, u32), Result<Arc<MessageSchema>, String>>,
}

impl MessageSchemas {
    pub fn new(registry: Registry) -> MessageSchemas {
        MessageSchemas {
            registry,
            known: HashMap::new(),
        }
    }

    /// Checks a message against its route's expected subject and, if the route
    /// asks, decodes its payload for the sink.
    pub async fn check(
        &mut self,
        schema_id: Option<u64>,
        schema_version: Option<u32>,
        payload: &[u8],
        rules: &SchemaRules,
    ) -> Result<Verdict, SchemaError> {
        let schema = match schema_id {
            None => None,
            Some(id) => match self.lookup(id, schema_version).await? {
                Ok(schema) => Some(schema),
                Err(why) => return Ok(Verdict::Reject(why)),
            },
        };
        let subject = schema.as_ref().map(|s| s.reference.subject.as_str());
        if let Some(expected) = rules.expected_subject.as_deref()
            && subject != Some(expected)
        {
            return Ok(Verdict::Reject(match subject {
                Some(subject) => format!(
                    "the record's schema subject is '{subject}', the route expects '{expected}'"
                ),
                None => format!("the record has no schema, the route expects subject '{expected}'"),
            }));
        }
        let Some(schema) = schema else {
            return Ok(Verdict::Pass {
                schema: None,
                decoded: None,
            });
        };
        if !rules.decode_avro {
            return Ok(Verdict::Pass {
                schema: Some(schema.reference.clone()),
                decoded: None,
            });
        }
        Ok(match schema.codec.decode(payload) {
            Ok(decoded) => Verdict::Pass {
                schema: Some(schema.reference.clone()),
                decoded,
            },
            Err(why) => Verdict::Reject(format!(
                "schema subject '{}' version {}: {why}",
                schema.reference.subject, schema.reference.version
            )),
        })
    }

    async fn lookup(
        &mut self,
        id: u64,
        version: Option<u32>,
    ) -> Result<Result<Arc<MessageSchema>, String>, SchemaError> {
        if let Some(version) = version
            && let Some(known) = self.known.get(&(id, version))
        {
            return Ok(known.clone());
        }
        let found = match version {
            Some(version) => self.registry.version(id, version).await?,
            None => self
                .registry
                .call("get_schema", || self.registry.client.get_schema_by_id(id))
                .await?
                .map_err(|e| e.message),
        };
        let schema = found.and_then(|info| {
            let codec =
                Codec::registered(&info.schema_type, &info.schema_definition).map_err(|e| {
                    format!(
                        "schema subject '{}' version {}: {e}",
                        info.subject, info.version
                    )
                })?;
            Ok(Arc::new(MessageSchema {
                reference: SchemaRef {
                    subject: info.subject,
                    version: info.version,
                },
                codec,
            }))
        });
        if let Some(version) = version {
            self.known.insert((id, version), schema.clone());
        }
        Ok(schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> ConnectorConfig {
        let text = "danube_service_url = \"http://127.0.0.1:6650\"\nconnector_name = \"c\"\n";
        ConnectorConfig::parse(text, &dir.join("c.toml"), &|_| None).unwrap()
    }

    /// A relative schema_file is found beside the configuration first, then
    /// in the working directory (the test's is the crate's directory).
    #[test]
    fn a_relative_schema_file_is_found_beside_the_config_then_in_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let in_cwd = Path::new("Cargo.toml");
        assert!(
            in_cwd.exists(),
            "the test runs in the host crate's directory"
        );
        assert_eq!(locate_schema_file(&config, in_cwd), in_cwd);
        std::fs::write(dir.path().join("Cargo.toml"), "beside").unwrap();
        assert_eq!(
            locate_schema_file(&config, in_cwd),
            dir.path().join("Cargo.toml")
        );
        // Found nowhere: the error names the path beside the configuration.
        let missing = Path::new("missing.json");
        assert_eq!(
            locate_schema_file(&config, missing),
            dir.path().join("missing.json")
        );
    }
}
