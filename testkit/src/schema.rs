//! The schema registry: subjects, their versions and compatibility modes.
//!
//! As in the real broker, a schema id names a subject (all its versions share
//! it) and versions count from 1. Compatibility is checked on field names and
//! types only, which is enough to catch the mistakes tests look for.

use std::collections::{BTreeMap, BTreeSet, btree_map::Entry};
use std::time::{SystemTime, UNIX_EPOCH};

use danube_core::proto::danube_schema as proto;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tonic::Status;

#[derive(Debug, Default)]
pub(crate) struct SchemaRegistry {
    subjects: BTreeMap<String, Subject>,
    next_id: u64,
}

#[derive(Debug)]
struct Subject {
    id: u64,
    schema_type: String,
    mode: Mode,
    versions: Vec<Version>,
}

#[derive(Debug, Clone)]
struct Version {
    version: u32,
    definition: Vec<u8>,
    description: String,
    created_by: String,
    tags: Vec<String>,
    created_at: u64,
    fingerprint: String,
}

/// How a new version must relate to the latest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    None,
    /// New readers can read old data (the real broker's default).
    #[default]
    Backward,
    /// Old readers can read new data.
    Forward,
    Full,
}

impl Mode {
    fn parse(text: &str) -> Result<Mode, Status> {
        match text.to_ascii_lowercase().as_str() {
            "none" => Ok(Mode::None),
            "backward" => Ok(Mode::Backward),
            "forward" => Ok(Mode::Forward),
            "full" => Ok(Mode::Full),
            _ => Err(Status::invalid_argument(format!(
                "Unknown compatibility mode '{text}', expected none, backward, forward or full"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::None => "NONE",
            Mode::Backward => "BACKWARD",
            Mode::Forward => "FORWARD",
            Mode::Full => "FULL",
        }
    }
}

const SCHEMA_TYPES: [&str; 6] = [
    "bytes",
    "string",
    "number",
    "avro",
    "json_schema",
    "protobuf",
];

/// Normalises the type names the client sends (and their aliases).
fn schema_type(text: &str) -> Result<&'static str, Status> {
    let lower = text.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "jsonschema" => "json_schema",
        "proto" => "protobuf",
        other => other,
    };
    SCHEMA_TYPES
        .into_iter()
        .find(|t| *t == alias)
        .ok_or_else(|| Status::invalid_argument(format!("Unknown schema type '{text}'")))
}

fn is_json_based(schema_type: &str) -> bool {
    matches!(schema_type, "avro" | "json_schema")
}

/// The record shape of a JSON Schema (`properties`, `required`) or an Avro
/// record (`fields`; a field without `default` is required).
#[derive(Debug, Default)]
struct Shape {
    fields: BTreeMap<String, Value>,
    required: BTreeSet<String>,
}

fn shape(schema_type: &str, definition: &Value) -> Shape {
    let mut shape = Shape::default();
    if schema_type == "avro" {
        for field in definition["fields"].as_array().into_iter().flatten() {
            if let Some(name) = field["name"].as_str() {
                shape.fields.insert(name.to_owned(), field["type"].clone());
                if field.get("default").is_none() {
                    shape.required.insert(name.to_owned());
                }
            }
        }
    } else {
        if let Some(properties) = definition["properties"].as_object() {
            for (name, property) in properties {
                shape.fields.insert(name.clone(), property["type"].clone());
            }
        }
        let required = definition["required"].as_array().into_iter().flatten();
        shape.required = required
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
    }
    shape
}

/// Whether data written with `writer` can be read with `reader`: the reader
/// keeps every field of the writer with the same type (a superset of the
/// properties) and requires nothing the writer did not require.
fn readable(reader: &Shape, writer: &Shape, errors: &mut Vec<String>) {
    for (name, ty) in &writer.fields {
        match reader.fields.get(name) {
            None => errors.push(format!("field '{name}' was removed")),
            Some(other) if other != ty => {
                errors.push(format!("field '{name}' changed type from {ty} to {other}"))
            }
            Some(_) => {}
        }
    }
    for name in reader.required.difference(&writer.required) {
        errors.push(format!("field '{name}' is required but was not before"));
    }
}

fn parse_json(definition: &[u8]) -> Result<Value, Status> {
    serde_json::from_slice(definition).map_err(|e| {
        Status::invalid_argument(format!("The schema definition is not valid JSON: {e}"))
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A definition as Danube's registry answers it: not the bytes as
/// registered but its own JSON form of the definition,
/// `{"Avro":{"raw_schema":"...","fingerprint":"..."}}`, `{"JsonSchema":{..}}`,
/// `{"Protobuf":{..}}`, or `"String"`, `"Number"`, `"Bytes"`.
fn envelope(schema_type: &str, definition: &[u8], fingerprint: &str) -> Vec<u8> {
    let raw = String::from_utf8_lossy(definition);
    let form = match schema_type {
        "avro" => json!({"Avro": {"raw_schema": raw, "fingerprint": fingerprint}}),
        "json_schema" => json!({"JsonSchema": {"raw_schema": raw, "fingerprint": fingerprint}}),
        "protobuf" => {
            json!({"Protobuf": {"raw_proto": raw, "message_name": "", "fingerprint": fingerprint}})
        }
        "string" => json!("String"),
        "number" => json!("Number"),
        _ => json!("Bytes"),
    };
    serde_json::to_vec(&form).expect("a JSON value serializes")
}

impl Subject {
    fn latest(&self) -> Result<&Version, Status> {
        self.versions
            .last()
            .ok_or_else(|| Status::not_found("The subject has no versions left"))
    }

    fn response(&self, subject: &str, version: &Version) -> proto::GetSchemaResponse {
        proto::GetSchemaResponse {
            schema_id: self.id,
            version: version.version,
            subject: subject.to_owned(),
            schema_type: self.schema_type.clone(),
            schema_definition: envelope(
                &self.schema_type,
                &version.definition,
                &version.fingerprint,
            ),
            description: version.description.clone(),
            created_at: version.created_at,
            created_by: version.created_by.clone(),
            tags: version.tags.clone(),
            fingerprint: version.fingerprint.clone(),
            compatibility_mode: self.mode.as_str().to_owned(),
        }
    }

    /// The errors that make `definition` incompatible with the latest version.
    fn incompatibilities(
        &self,
        schema_type: &str,
        definition: &[u8],
        mode: Mode,
    ) -> Result<Vec<String>, Status> {
        let Some(latest) = self.versions.last() else {
            return Ok(Vec::new());
        };
        if mode == Mode::None {
            return Ok(Vec::new());
        }
        if schema_type != self.schema_type {
            return Ok(vec![format!(
                "Schema types must match: the subject is {}, not {schema_type}",
                self.schema_type
            )]);
        }
        if !is_json_based(schema_type) {
            let changed = schema_type == "protobuf" && latest.definition != definition;
            return Ok(if changed {
                vec!["Protobuf schemas are not parsed by the test broker: any change is incompatible".to_owned()]
            } else {
                Vec::new()
            });
        }
        let old = shape(schema_type, &parse_json(&latest.definition)?);
        let new = shape(schema_type, &parse_json(definition)?);
        let mut errors = Vec::new();
        if matches!(mode, Mode::Backward | Mode::Full) {
            readable(&new, &old, &mut errors);
        }
        if matches!(mode, Mode::Forward | Mode::Full) {
            readable(&old, &new, &mut errors);
        }
        Ok(errors)
    }
}

impl SchemaRegistry {
    fn subject(&self, subject: &str) -> Result<&Subject, Status> {
        self.subjects
            .get(subject)
            .ok_or_else(|| Status::not_found(format!("Schema not found for subject: {subject}")))
    }

    pub(crate) fn has_subject(&self, subject: &str) -> bool {
        self.subjects.contains_key(subject)
    }

    /// Adds a version, or returns the existing one with the same definition.
    pub(crate) fn register(
        &mut self,
        request: proto::RegisterSchemaRequest,
    ) -> Result<proto::RegisterSchemaResponse, Status> {
        if request.subject.is_empty() {
            return Err(Status::invalid_argument(
                "The schema subject must not be empty",
            ));
        }
        let schema_type = schema_type(&request.schema_type)?;
        let parsed = if is_json_based(schema_type) {
            Some(parse_json(&request.schema_definition)?)
        } else {
            None
        };

        if let Some(subject) = self.subjects.get(&request.subject) {
            let same = subject.versions.iter().find(|v| match &parsed {
                Some(value) => {
                    serde_json::from_slice::<Value>(&v.definition).ok().as_ref() == Some(value)
                }
                None => v.definition == request.schema_definition,
            });
            if let Some(same) = same.filter(|_| subject.schema_type == schema_type) {
                return Ok(proto::RegisterSchemaResponse {
                    schema_id: subject.id,
                    version: same.version,
                    is_new_version: false,
                    fingerprint: same.fingerprint.clone(),
                });
            }
            let errors =
                subject.incompatibilities(schema_type, &request.schema_definition, subject.mode)?;
            // `Internal`, worded as the real broker answers (the mode in its
            // Rust spelling included), so that callers match what they meet.
            if !errors.is_empty() {
                return Err(Status::internal(format!(
                    "Failed to register schema: Schema is not compatible with subject '{}' (mode: {:?}): {}",
                    request.subject,
                    subject.mode,
                    errors.join("; ")
                )));
            }
        }

        let subject = match self.subjects.entry(request.subject) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                self.next_id += 1;
                entry.insert(Subject {
                    id: self.next_id,
                    schema_type: schema_type.to_owned(),
                    mode: Mode::default(),
                    versions: Vec::new(),
                })
            }
        };
        subject.schema_type = schema_type.to_owned();
        let version = subject.versions.last().map_or(1, |v| v.version + 1);
        let fingerprint = format!("{:x}", Sha256::digest(&request.schema_definition));
        subject.versions.push(Version {
            version,
            definition: request.schema_definition,
            description: request.description,
            created_by: request.created_by,
            tags: request.tags,
            created_at: now_secs(),
            fingerprint: fingerprint.clone(),
        });
        Ok(proto::RegisterSchemaResponse {
            schema_id: subject.id,
            version,
            is_new_version: true,
            fingerprint,
        })
    }

    pub(crate) fn get(
        &self,
        request: &proto::GetSchemaRequest,
    ) -> Result<proto::GetSchemaResponse, Status> {
        let (name, subject) = self
            .subjects
            .iter()
            .find(|(_, s)| s.id == request.schema_id)
            .ok_or_else(|| {
                Status::not_found(format!("Schema not found for ID: {}", request.schema_id))
            })?;
        let version = match request.version {
            None => subject.latest()?,
            Some(wanted) => subject
                .versions
                .iter()
                .find(|v| v.version == wanted)
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "Version {wanted} not found for schema ID {}",
                        request.schema_id
                    ))
                })?,
        };
        Ok(subject.response(name, version))
    }

    pub(crate) fn latest(&self, subject: &str) -> Result<proto::GetSchemaResponse, Status> {
        let entry = self.subject(subject)?;
        Ok(entry.response(subject, entry.latest()?))
    }

    pub(crate) fn versions(&self, subject: &str) -> Result<proto::ListVersionsResponse, Status> {
        let entry = self.subject(subject)?;
        let versions = entry
            .versions
            .iter()
            .map(|v| proto::SchemaVersionInfo {
                version: v.version,
                created_at: v.created_at,
                created_by: v.created_by.clone(),
                description: v.description.clone(),
                fingerprint: v.fingerprint.clone(),
                schema_id: entry.id,
            })
            .collect();
        Ok(proto::ListVersionsResponse { versions })
    }

    /// Checks a candidate against the latest version; a subject without
    /// versions accepts anything.
    pub(crate) fn check(
        &self,
        request: &proto::CheckCompatibilityRequest,
    ) -> Result<proto::CheckCompatibilityResponse, Status> {
        let schema_type = schema_type(&request.schema_type)?;
        if is_json_based(schema_type) {
            parse_json(&request.new_schema_definition)?;
        }
        let errors = match self.subjects.get(&request.subject) {
            None => Vec::new(),
            Some(subject) => {
                let mode = match &request.compatibility_mode {
                    Some(text) => Mode::parse(text)?,
                    None => subject.mode,
                };
                subject.incompatibilities(schema_type, &request.new_schema_definition, mode)?
            }
        };
        Ok(proto::CheckCompatibilityResponse {
            is_compatible: errors.is_empty(),
            errors,
        })
    }

    pub(crate) fn set_mode(
        &mut self,
        request: &proto::SetCompatibilityModeRequest,
    ) -> Result<proto::SetCompatibilityModeResponse, Status> {
        let mode = Mode::parse(&request.compatibility_mode)?;
        let subject = self
            .subjects
            .get_mut(&request.subject)
            .ok_or_else(|| Status::not_found(format!("Subject not found: {}", request.subject)))?;
        subject.mode = mode;
        Ok(proto::SetCompatibilityModeResponse {
            success: true,
            message: format!(
                "Compatibility mode of '{}' set to {}",
                request.subject,
                mode.as_str()
            ),
        })
    }

    pub(crate) fn delete_version(
        &mut self,
        request: &proto::DeleteSchemaVersionRequest,
    ) -> Result<proto::DeleteSchemaVersionResponse, Status> {
        let subject = self
            .subjects
            .get_mut(&request.subject)
            .ok_or_else(|| Status::not_found(format!("Subject not found: {}", request.subject)))?;
        let before = subject.versions.len();
        subject.versions.retain(|v| v.version != request.version);
        if subject.versions.len() == before {
            return Err(Status::not_found(format!(
                "Version {} not found for subject {}",
                request.version, request.subject
            )));
        }
        Ok(proto::DeleteSchemaVersionResponse {
            success: true,
            message: format!(
                "Deleted version {} of '{}'",
                request.version, request.subject
            ),
        })
    }

    pub(crate) fn list_subjects(&self) -> proto::ListSubjectsResponse {
        let subjects = self
            .subjects
            .iter()
            .map(|(name, s)| {
                let latest = s.versions.last();
                proto::SubjectSummary {
                    subject: name.clone(),
                    schema_type: s.schema_type.clone(),
                    latest_version: latest.map_or(0, |v| v.version),
                    compatibility_mode: s.mode.as_str().to_owned(),
                    schema_id: s.id,
                    tags: latest.map_or_else(Vec::new, |v| v.tags.clone()),
                }
            })
            .collect();
        proto::ListSubjectsResponse { subjects }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(
        registry: &mut SchemaRegistry,
        definition: &str,
    ) -> Result<proto::RegisterSchemaResponse, Status> {
        registry.register(proto::RegisterSchemaRequest {
            subject: "orders".into(),
            schema_type: "json_schema".into(),
            schema_definition: definition.as_bytes().to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn versions_grow_and_identical_schemas_are_reused() {
        let mut registry = SchemaRegistry::default();
        let v1 = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
        let v2 = r#"{"type":"object","properties":{"id":{"type":"integer"},"note":{"type":"string"}},"required":["id"]}"#;
        let first = register(&mut registry, v1).expect("v1");
        assert_eq!((first.version, first.is_new_version), (1, true));
        let again = register(&mut registry, v1).expect("v1 again");
        assert_eq!(
            (again.schema_id, again.version, again.is_new_version),
            (first.schema_id, 1, false)
        );
        let second = register(&mut registry, v2).expect("v2 adds an optional field");
        assert_eq!((second.schema_id, second.version), (first.schema_id, 2));
    }

    #[test]
    fn backward_mode_refuses_dropped_or_retyped_fields() {
        let mut registry = SchemaRegistry::default();
        register(
            &mut registry,
            r#"{"properties":{"id":{"type":"integer"},"name":{"type":"string"}}}"#,
        )
        .expect("v1");
        let dropped = register(&mut registry, r#"{"properties":{"id":{"type":"integer"}}}"#)
            .expect_err("dropped field");
        assert_eq!(dropped.code(), tonic::Code::Internal);
        assert!(
            dropped.message().contains("'name' was removed"),
            "{}",
            dropped.message()
        );
        let retyped = register(
            &mut registry,
            r#"{"properties":{"id":{"type":"string"},"name":{"type":"string"}}}"#,
        );
        assert_eq!(retyped.expect_err("retyped").code(), tonic::Code::Internal);
        let garbage = register(&mut registry, "not json").expect_err("not json");
        assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
    }
}
