//! The schema registry through the client's `SchemaRegistryClient`, and
//! producers bound to a schema subject.

mod support;

use danube_client::{CompatibilityMode, SchemaType, SubType};
use danube_testkit::TestBroker;
use support::{client, consumer, next};
use tonic::Code;

const V1: &str = r#"{"type":"object","properties":{"id":{"type":"integer"}},"required":["id"]}"#;
const V2: &str = r#"{"type":"object","properties":{"id":{"type":"integer"},"note":{"type":"string"}},"required":["id"]}"#;
const V3: &str = r#"{"type":"object","properties":{"note":{"type":"string"}}}"#;

#[tokio::test]
async fn subjects_version_and_check_compatibility() {
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let schemas = client.schema();
    let register = |definition: &'static str| {
        schemas
            .register_schema("orders")
            .with_type(SchemaType::JsonSchema)
            .with_schema_data(definition.as_bytes().to_vec())
            .execute()
    };

    let id = register(V1).await.unwrap();
    assert_eq!(register(V1).await.unwrap(), id, "identical schema, same id");
    assert_eq!(
        register(V2).await.unwrap(),
        id,
        "versions share the subject's id"
    );
    let latest = schemas.get_latest_schema("orders").await.unwrap();
    assert_eq!((latest.schema_id, latest.version), (id, 2));
    assert_eq!(raw_schema(&latest.schema_definition), V2);
    assert_eq!(schemas.list_versions("orders").await.unwrap(), [1, 2]);
    let first = schemas.get_schema_version(id, Some(1)).await.unwrap();
    assert_eq!(raw_schema(&first.schema_definition), V1);

    // V3 drops "id": not backward compatible, so refused until the mode allows it.
    let check = schemas
        .check_compatibility(
            "orders",
            V3.as_bytes().to_vec(),
            SchemaType::JsonSchema,
            None,
        )
        .await
        .unwrap();
    assert!(!check.is_compatible);
    assert!(
        check.errors.iter().any(|e| e.contains("'id'")),
        "{:?}",
        check.errors
    );
    // Refused as the real broker refuses it: `Internal`, naming subject and mode.
    let error = register(V3).await.expect_err("incompatible");
    let status = error.extract_status().expect("a status from the broker");
    assert_eq!(status.code(), Code::Internal);
    assert!(
        status
            .message()
            .contains("not compatible with subject 'orders' (mode: Backward)"),
        "{}",
        status.message()
    );
    schemas
        .set_compatibility_mode("orders", CompatibilityMode::None)
        .await
        .unwrap();
    register(V3).await.expect("anything goes in mode none");
    assert_eq!(schemas.list_versions("orders").await.unwrap(), [1, 2, 3]);

    let missing = schemas
        .get_latest_schema("nothing")
        .await
        .expect_err("no such subject");
    assert_eq!(
        missing.extract_status().map(|s| s.code()),
        Some(Code::NotFound)
    );
}

#[tokio::test]
async fn producers_stamp_their_schema_on_messages() {
    let topic = "/default/typed";
    let broker = TestBroker::start().await.unwrap();
    let client = client(&broker).await;
    let id = client
        .schema()
        .register_schema("typed-value")
        .with_type(SchemaType::JsonSchema)
        .with_schema_data(V1.as_bytes().to_vec())
        .execute()
        .await
        .unwrap();

    let mut unregistered = client
        .new_producer()
        .with_topic(topic)
        .with_name("wrong")
        .with_schema_subject("unknown-subject")
        .build()
        .unwrap();
    let error = unregistered
        .create()
        .await
        .expect_err("unregistered subject");
    assert_eq!(
        error.extract_status().map(|s| s.code()),
        Some(Code::FailedPrecondition)
    );

    let mut typed = client
        .new_producer()
        .with_topic(topic)
        .with_name("typed")
        .with_schema_subject("typed-value")
        .with_reliable_dispatch()
        .build()
        .unwrap();
    typed.create().await.unwrap();
    let (_consumer, mut messages) =
        consumer(&client, topic, "reader", "typed", SubType::Exclusive).await;
    typed.send(br#"{"id":1}"#.to_vec(), None).await.unwrap();

    let message = next(&mut messages, "a typed message").await;
    assert_eq!(
        (message.schema_id, message.schema_version),
        (Some(id), Some(1))
    );
    let stored = &broker.messages(topic)[0];
    assert_eq!(
        (stored.schema_id, stored.schema_version),
        (Some(id), Some(1))
    );
}

/// The schema text inside a definition as the registry answers it, in the
/// real broker's envelope: `{"JsonSchema":{"raw_schema":"...",..}}`.
fn raw_schema(definition: &[u8]) -> String {
    let envelope: serde_json::Value = serde_json::from_slice(definition).unwrap();
    envelope["JsonSchema"]["raw_schema"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON Schema envelope: {envelope}"))
        .to_string()
}
