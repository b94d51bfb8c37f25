//! What a schema means for payloads: a source record's payload is checked
//! (and, for Avro, encoded) before it is published; a consumed payload is
//! decoded (Avro) before a sink sees it.
//!
//! Connectors speak JSON: for an Avro subject a source emits the record as
//! JSON and the host publishes its Avro binary encoding; a sink gets the
//! Avro message back as JSON. JSON Schema is checked with the `jsonschema`
//! crate, without fetching remote `$ref`s.

use apache_avro::types::Value as AvroValue;
use serde_json::Value as Json;

use crate::config::SchemaType;

/// The checks and conversions of one schema version.
pub enum Codec {
    /// Any payload.
    Bytes,
    /// UTF-8 text.
    String,
    /// A number as JSON text, e.g. `42` or `-1.5`.
    Number,
    /// A JSON document valid against the schema.
    JsonSchema(Box<jsonschema::Validator>),
    /// Avro binary (one datum, no header), from and to JSON.
    Avro(apache_avro::Schema),
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.type_name())
    }
}

/// Why a schema type cannot be used here.
fn unsupported(schema_type: &str) -> String {
    format!(
        "schema type {schema_type:?} is not supported by this host (bytes, string, number, json_schema and avro are)"
    )
}

impl Codec {
    /// Builds the codec of a definition of `schema_type`.
    pub fn new(schema_type: SchemaType, definition: &[u8]) -> Result<Codec, String> {
        match schema_type {
            SchemaType::Bytes => Ok(Codec::Bytes),
            SchemaType::String => Ok(Codec::String),
            SchemaType::Number => Ok(Codec::Number),
            SchemaType::JsonSchema => {
                let schema: Json = serde_json::from_slice(definition)
                    .map_err(|e| format!("the JSON Schema is not JSON: {e}"))?;
                let validator = jsonschema::validator_for(&schema)
                    .map_err(|e| format!("not a valid JSON Schema: {e}"))?;
                Ok(Codec::JsonSchema(Box::new(validator)))
            }
            SchemaType::Avro => {
                let text = std::str::from_utf8(definition)
                    .map_err(|_| "the Avro schema is not UTF-8 text".to_string())?;
                apache_avro::Schema::parse_str(text)
                    .map(Codec::Avro)
                    .map_err(|e| format!("not a valid Avro schema: {e}"))
            }
            SchemaType::Protobuf => Err(unsupported("protobuf")),
        }
    }

    /// The codec of a definition the registry returned. Danube's registry
    /// does not answer the bytes as registered but its own JSON form of the
    /// definition (`{"Avro":{"raw_schema":"...","fingerprint":"..."}}`,
    /// `{"JsonSchema":{..}}`, `"String"`); the schema is inside it.
    /// `schema_type` is the registry's name of the type, read as the
    /// configuration's `schema_type` is.
    pub fn registered(schema_type: &str, stored: &[u8]) -> Result<Codec, String> {
        let schema_type =
            SchemaType::try_from(schema_type.to_string()).map_err(|_| unsupported(schema_type))?;
        let wrapped = serde_json::from_slice::<Json>(stored)
            .ok()
            .and_then(|form| {
                let object = form.as_object().filter(|o| o.len() == 1)?;
                let inner = object.get("Avro").or_else(|| object.get("JsonSchema"))?;
                inner.get("raw_schema")?.as_str().map(str::to_owned)
            });
        match wrapped {
            Some(raw) => Codec::new(schema_type, raw.as_bytes()),
            None => Codec::new(schema_type, stored),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Codec::Bytes => "bytes",
            Codec::String => "string",
            Codec::Number => "number",
            Codec::JsonSchema(_) => "json_schema",
            Codec::Avro(_) => "avro",
        }
    }

    /// Checks a payload a source produced. `Some` holds the bytes to publish
    /// instead (its Avro encoding); the error says why the payload does not
    /// fit.
    pub fn encode(&self, payload: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self {
            Codec::Bytes => Ok(None),
            Codec::String => match std::str::from_utf8(payload) {
                Ok(_) => Ok(None),
                Err(e) => Err(format!("the payload is not UTF-8 text: {e}")),
            },
            Codec::Number => match parse_json(payload)? {
                Json::Number(_) => Ok(None),
                other => Err(format!("the payload is not a number but {}", kind(&other))),
            },
            Codec::JsonSchema(validator) => {
                let document = parse_json(payload)?;
                let errors: Vec<String> = validator
                    .iter_errors(&document)
                    .map(|e| match e.instance_path().as_str() {
                        "" => e.to_string(),
                        path => format!("at {path}: {e}"),
                    })
                    .collect();
                match errors.is_empty() {
                    true => Ok(None),
                    false => Err(format!(
                        "the payload does not match the JSON Schema: {}",
                        errors.join("; ")
                    )),
                }
            }
            Codec::Avro(schema) => {
                let document = parse_json(payload)?;
                let value = AvroValue::try_from(document)
                    .and_then(|v| v.resolve(schema))
                    .map_err(|e| format!("the payload does not match the Avro schema: {e}"))?;
                apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                    .build()
                    .and_then(|w| w.write_value_to_vec(value))
                    .map(Some)
                    .map_err(|e| format!("the payload cannot be encoded as Avro: {e}"))
            }
        }
    }

    /// Turns a consumed payload into what a sink sees: Avro binary becomes
    /// JSON; every other payload is passed as it is (`None`). A payload of an
    /// Avro subject that is JSON already (danube-connect 0.5 publishes Avro
    /// subjects as JSON) is passed as it is too.
    pub fn decode(&self, payload: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let Codec::Avro(schema) = self else {
            return Ok(None);
        };
        let mut reader = payload;
        let decoded = apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()
            .and_then(|r| r.read_value(&mut reader))
            .map_err(|e| e.to_string())
            .and_then(|value| match reader.is_empty() {
                true => Json::try_from(value).map_err(|e| e.to_string()),
                false => Err("bytes are left after the record".into()),
            });
        match decoded {
            Ok(json) => Ok(Some(serde_json::to_vec(&json).map_err(|e| e.to_string())?)),
            Err(_) if serde_json::from_slice::<Json>(payload).is_ok() => Ok(None),
            Err(e) => Err(format!("the payload is not Avro of its schema: {e}")),
        }
    }
}

fn parse_json(payload: &[u8]) -> Result<Json, String> {
    serde_json::from_slice(payload).map_err(|e| format!("the payload is not JSON: {e}"))
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER_JSON_SCHEMA: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"note":{"type":"string"}},"required":["id"]}"#;
    const ORDER_AVRO: &str = r#"{"type":"record","name":"Order","fields":[
        {"name":"id","type":"long"},
        {"name":"note","type":["null","string"],"default":null}]}"#;

    fn codec(schema_type: SchemaType, definition: &str) -> Codec {
        Codec::new(schema_type, definition.as_bytes()).unwrap()
    }

    #[test]
    fn json_schema_passes_valid_documents_and_names_what_is_wrong() {
        let c = codec(SchemaType::JsonSchema, ORDER_JSON_SCHEMA);
        assert_eq!(c.encode(br#"{"id":7,"note":"x"}"#), Ok(None));
        let wrong = c.encode(br#"{"id":"seven"}"#).unwrap_err();
        assert!(
            wrong.contains("at /id") && wrong.contains("integer"),
            "{wrong}"
        );
        let missing = c.encode(br#"{"note":"x"}"#).unwrap_err();
        assert!(
            missing.contains("\"id\" is a required property"),
            "{missing}"
        );
        assert!(c.encode(b"not json").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn the_registrys_own_form_of_a_definition_is_unwrapped() {
        let avro = r#"{"type":"record","name":"r","fields":[{"name":"id","type":"long"}]}"#;
        let stored = serde_json::to_vec(
            &serde_json::json!({"Avro": {"raw_schema": avro, "fingerprint": "f"}}),
        )
        .unwrap();
        let registered = Codec::registered("avro", &stored).unwrap();
        assert_eq!(
            registered.encode(br#"{"id": 7}"#).unwrap(),
            codec(SchemaType::Avro, avro)
                .encode(br#"{"id": 7}"#)
                .unwrap()
        );
        let json_schema = r#"{"type":"object","required":["id"]}"#;
        let stored = serde_json::to_vec(
            &serde_json::json!({"JsonSchema": {"raw_schema": json_schema, "fingerprint": "f"}}),
        )
        .unwrap();
        let checked = Codec::registered("json_schema", &stored).unwrap();
        assert!(checked.encode(br#"{"id": 1}"#).is_ok());
        assert!(
            checked.encode(br#"{"other": 1}"#).is_err(),
            "the inner schema is the one checked"
        );
        // Definitions as registered, and the unit forms, pass as they are.
        assert!(Codec::registered("avro", avro.as_bytes()).is_ok());
        assert!(Codec::registered("string", br#""String""#).is_ok());
    }

    #[test]
    fn bad_definitions_are_refused() {
        assert!(
            Codec::new(SchemaType::JsonSchema, b"{")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            Codec::new(SchemaType::JsonSchema, br#"{"type":"no-such-type"}"#)
                .unwrap_err()
                .contains("not a valid JSON Schema")
        );
        assert!(
            Codec::new(SchemaType::Avro, br#"{"type":"record"}"#)
                .unwrap_err()
                .contains("not a valid Avro schema")
        );
        assert!(
            Codec::new(SchemaType::Protobuf, b"")
                .unwrap_err()
                .contains("not supported")
        );
    }

    #[test]
    fn avro_round_trips_through_binary() {
        let c = codec(SchemaType::Avro, ORDER_AVRO);
        let encoded = c.encode(br#"{"id":7,"note":"x"}"#).unwrap().unwrap();
        // long 7 (zigzag 14), union branch 1 (zigzag 2), string of 1 byte.
        assert_eq!(encoded, [14, 2, 2, b'x']);
        let decoded: Json = serde_json::from_slice(&c.decode(&encoded).unwrap().unwrap()).unwrap();
        assert_eq!(decoded, serde_json::json!({"id": 7, "note": "x"}));
        // An optional field left out takes its default.
        assert_eq!(c.encode(br#"{"id":1}"#), Ok(Some(vec![2, 0])));
    }

    #[test]
    fn avro_refuses_records_that_do_not_fit() {
        let c = codec(SchemaType::Avro, ORDER_AVRO);
        let wrong = c.encode(br#"{"id":"seven"}"#).unwrap_err();
        assert!(wrong.contains("does not match the Avro schema"), "{wrong}");
        assert!(c.encode(br#"{"note":"x"}"#).is_err(), "id is required");
        assert!(
            c.decode(&[14, 2, 2, b'x', 0])
                .unwrap_err()
                .contains("left after")
        );
        assert!(c.decode(&[0x80]).is_err(), "truncated");
    }

    #[test]
    fn avro_subjects_published_as_json_pass_through() {
        let c = codec(SchemaType::Avro, ORDER_AVRO);
        assert_eq!(c.decode(br#"{"id":7}"#).unwrap(), None);
    }

    #[test]
    fn plain_types_check_text_and_numbers() {
        assert!(codec(SchemaType::String, "").encode(&[0xff]).is_err());
        assert_eq!(codec(SchemaType::Number, "").encode(b"-1.5"), Ok(None));
        assert!(
            codec(SchemaType::Number, "")
                .encode(b"\"1\"")
                .unwrap_err()
                .contains("a string")
        );
        assert_eq!(codec(SchemaType::Bytes, "").encode(&[0xff]), Ok(None));
        assert_eq!(
            codec(SchemaType::JsonSchema, "{}").decode(b"x").unwrap(),
            None
        );
    }
}
