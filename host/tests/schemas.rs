//! Schemas through the real `danube-host` binary, each on the test broker
//! and on the real Danube broker (its own schema registry): `[[schemas]]`
//! registered at start with each version strategy, an incompatible schema
//! stopping start-up, JSON-Schema-invalid source records dead-lettered, Avro
//! from datagen-source to file-sink (as JSON, or as published when the sink
//! asks), and a sink route's expected subject.
//!
//! Topic names: the real broker takes every topic whose name starts with
//! another's for a partition of it, so dead-letter topics are
//! `/default/dlq-NAME`, never `TOPIC-dlq`.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::prelude::{BASE64_STANDARD, Engine};
use common::{
    Host, broker_table, committed_seq, guest, health_detail, wait_subscribed, wait_until_async,
    write_config,
};
use danube_client::{DanubeClient, SchemaType};
use danube_testkit::{Broker, BrokerKind, Tap};
use serde_json::Value;

/// Exit code of a configuration error (`danube-host --help`).
const EXIT_CONFIG: i32 = 2;

const EVENT_V1: &str =
    r#"{"type":"object","properties":{"seq":{"type":"integer"}},"required":["seq"]}"#;
const EVENT_V2: &str = r#"{"type":"object","properties":{"seq":{"type":"integer"},"topic":{"type":"string"}},"required":["seq"]}"#;

const EVENT_AVRO: &str = r#"{"type":"record","name":"Event","fields":[
    {"name":"seq","type":"long"},
    {"name":"key","type":["null","string"]},
    {"name":"topic","type":"string"},
    {"name":"pad","type":"string"}]}"#;

async fn client(broker: &Broker) -> DanubeClient {
    DanubeClient::builder()
        .service_url(broker.url())
        .build()
        .await
        .unwrap()
}

async fn register(client: &DanubeClient, subject: &str, schema_type: SchemaType, definition: &str) {
    client
        .schema()
        .register_schema(subject)
        .with_type(schema_type)
        .with_schema_data(definition.as_bytes().to_vec())
        .execute()
        .await
        .unwrap();
}

/// The dead-letter topic of connector `name`.
fn dlq(name: &str) -> String {
    format!("/default/dlq-{name}")
}

/// A datagen-source configuration publishing `count` records to `topic`,
/// with `schemas` (TOML) beside it.
fn datagen_config(
    dir: &Path,
    broker: &Broker,
    name: &str,
    topic: &str,
    count: u64,
    schemas: &str,
) -> std::path::PathBuf {
    write_config(
        dir,
        &format!("{name}.toml"),
        &broker.url(),
        name,
        &format!(
            "{schemas}\n[dead_letter]\ntopic = \"{dlq}\"\n\n[datagen]\ntopics = [\"{topic}\"]\ncount = {count}\n",
            dlq = dlq(name)
        ),
    )
}

fn schema_entry(
    topic: &str,
    subject: &str,
    schema_type: &str,
    file: &str,
    strategy: &str,
) -> String {
    format!(
        "[[schemas]]\ntopic = \"{topic}\"\nsubject = \"{subject}\"\nschema_type = \"{schema_type}\"\nschema_file = \"{file}\"\nauto_register = true\nversion_strategy = {strategy}\n"
    )
}

/// Starts a file-sink named `name` on `topic` (which must exist) whose route
/// expects `expected_subject`, with `file_keys` (TOML) added to its `[file]`
/// table, and waits until it subscribed; returns it and the file it writes.
async fn start_file_sink(
    broker: &Broker,
    dir: &Path,
    name: &str,
    topic: &str,
    expected_subject: &str,
    file_keys: &str,
) -> (Host, std::path::PathBuf) {
    let out = dir.join("out");
    let config = write_config(
        dir,
        &format!("{name}.toml"),
        &broker.url(),
        name,
        &format!(
            "{broker}[dead_letter]\ntopic = \"{dlq}\"\n\n{file_sink}file_name = \"{name}.jsonl\"\nexpected_schema_subject = \"{expected_subject}\"\n{file_keys}\n",
            broker = broker_table(broker),
            dlq = dlq(name),
            file_sink = common::file_sink_tables(&out, topic, name)
        ),
    );
    let sink = Host::start(&guest("file-sink"), &config, &[]);
    wait_subscribed(broker, &[topic.to_string()], name, &sink).await;
    (sink, out.join(format!("{name}.jsonl")))
}

/// Creates `topic` and records it, runs a datagen host until the recorder
/// has `count` messages, drains it, and returns the schema version every
/// message carries.
async fn published_version(
    broker: &Broker,
    module: &Path,
    config: &Path,
    topic: &str,
    count: usize,
) -> u32 {
    broker.create_topic(topic, 0, true).await.unwrap();
    let recorder = Tap::start(&broker.url(), topic).await.unwrap();
    let host = Host::start(module, config, &[]);
    assert!(
        recorder.wait_for(count, Duration::from_secs(60)).await,
        "{} of {count} records published; log:\n{}",
        recorder.count(),
        host.log()
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
    let versions: Vec<Option<u32>> = recorder.stored().iter().map(|m| m.schema_version).collect();
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
    versions[0].expect("messages carry a schema version")
}

danube_testkit::on_both_brokers! {
    async fn each_version_strategy_attaches_its_version(broker: Broker) {
        let client = client(&broker).await;
        let dir = tempfile::tempdir().unwrap();
        let module = guest("datagen-source");
        // Version 1 exists; the file is version 2 and auto_register adds it.
        register(&client, "events-value", SchemaType::JsonSchema, EVENT_V1).await;
        std::fs::write(dir.path().join("event.json"), EVENT_V2).unwrap();

        for (name, strategy, expected) in [
            ("latest", "\"latest\"", 2),
            ("pinned", "{ pinned = 1 }", 1),
            ("minimum", "{ minimum = 2 }", 2),
        ] {
            let topic = format!("/default/strategy-{name}");
            let schemas = schema_entry(
                &topic,
                "events-value",
                "json_schema",
                "event.json",
                strategy,
            );
            let config = datagen_config(dir.path(), &broker, name, &topic, 5, &schemas);
            let version = published_version(&broker, &module, &config, &topic, 5).await;
            assert_eq!(version, expected, "version_strategy = {strategy}");
        }
        let versions = client.schema().list_versions("events-value").await.unwrap();
        assert_eq!(
            versions,
            [1, 2],
            "re-registering an identical file adds no version"
        );

        // A minimum the registry does not reach stops start-up, naming both.
        let topic = "/default/strategy-unreached";
        let schemas = schema_entry(
            topic,
            "events-value",
            "json_schema",
            "event.json",
            "{ minimum = 3 }",
        );
        let config = datagen_config(dir.path(), &broker, "unreached", topic, 5, &schemas);
        let status = Host::start(&module, &config, &[]).wait(Duration::from_secs(60));
        let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
        assert_eq!(status.code(), Some(EXIT_CONFIG), "{log}");
        assert!(
            log.contains("'events-value'")
                && log.contains("minimum = 3")
                && log.contains("latest version is 2"),
            "{log}"
        );
        if let Some(test) = broker.as_test() {
            assert!(test.messages(topic).is_empty());
        }
    }

    /// danube-connect's shape of a schema without a definition file:
    /// `schema_type = "String"` (any case) and `schema_file = ""`. The
    /// subject is registered with the type alone and the records carry it.
    async fn a_string_schema_needs_no_file(broker: Broker) {
        let dir = tempfile::tempdir().unwrap();
        let topic = "/default/texts";
        let schemas = schema_entry(topic, "texts-value", "String", "", "\"latest\"");
        let config = datagen_config(dir.path(), &broker, "texts", topic, 5, &schemas);
        let version = published_version(&broker, &guest("datagen-source"), &config, topic, 5).await;
        assert_eq!(version, 1);
        let client = client(&broker).await;
        let latest = client.schema().get_latest_schema("texts-value").await.unwrap();
        assert_eq!(latest.schema_type.to_ascii_lowercase(), "string");
    }

    async fn an_incompatible_schema_stops_start_up_naming_the_subject(broker: Broker) {
        const TOPIC: &str = "/default/orders";
        let client = client(&broker).await;
        let dir = tempfile::tempdir().unwrap();
        register(&client, "orders-value", SchemaType::JsonSchema, EVENT_V1).await;
        // `seq` changes type: not backward compatible.
        std::fs::write(
            dir.path().join("orders.json"),
            r#"{"type":"object","properties":{"seq":{"type":"string"}},"required":["seq"]}"#,
        )
        .unwrap();
        let schemas = schema_entry(
            TOPIC,
            "orders-value",
            "json_schema",
            "orders.json",
            "\"latest\"",
        );
        let config = datagen_config(dir.path(), &broker, "orders", TOPIC, 5, &schemas);
        let status =
            Host::start(&guest("datagen-source"), &config, &[]).wait(Duration::from_secs(60));
        let log = std::fs::read_to_string(config.with_extension("log")).unwrap();
        assert_eq!(status.code(), Some(EXIT_CONFIG), "{log}");
        let error = log
            .lines()
            .find(|l| l.starts_with("danube-host:"))
            .unwrap_or_else(|| panic!("no error line:\n{log}"));
        println!("{:?} broker: {error}", broker.kind());
        assert!(error.contains("schema subject 'orders-value'"), "{error}");
        assert!(error.contains("make the schema compatible"), "{error}");
        // The brokers word the reason differently.
        let reason = match broker.kind() {
            BrokerKind::Test => "field 'seq' changed type",
            BrokerKind::Real => "changed type of field 'seq'",
        };
        assert!(error.contains(reason), "{error}");
        if let Some(test) = broker.as_test() {
            assert!(test.messages(TOPIC).is_empty());
        }
        assert_eq!(
            client.schema().list_versions("orders-value").await.unwrap(),
            [1]
        );
    }

    async fn a_sink_route_dead_letters_records_of_another_subject(broker: Broker) {
        const TOPIC: &str = "/default/routed";
        broker.create_topic(TOPIC, 0, true).await.unwrap();
        broker.create_topic(&dlq("routed"), 0, true).await.unwrap();
        let dead_lettered = Tap::start(&broker.url(), &dlq("routed")).await.unwrap();
        let client = client(&broker).await;
        register(&client, "other-value", SchemaType::JsonSchema, EVENT_V1).await;
        let dir = tempfile::tempdir().unwrap();
        let (sink, out_file) =
            start_file_sink(&broker, dir.path(), "routed", TOPIC, "events-value", "").await;

        let mut producer = client
            .new_producer()
            .with_topic(TOPIC)
            .with_name("other")
            .with_schema_subject("other-value")
            .with_reliable_dispatch()
            .build()
            .unwrap();
        producer.create().await.unwrap();
        for seq in 0..3 {
            producer
                .send(format!(r#"{{"seq":{seq}}}"#).into_bytes(), None)
                .await
                .unwrap();
        }
        assert!(
            dead_lettered.wait_for(3, Duration::from_secs(30)).await,
            "{} dead-lettered; sink {}, log:\n{}",
            dead_lettered.count(),
            health_detail(&sink),
            sink.log()
        );
        assert!(sink.terminate(Duration::from_secs(30)).success());
        for message in dead_lettered.stored() {
            let error = &message.attributes["dlq.error"];
            assert!(
                error.contains("schema subject is 'other-value', the route expects 'events-value'"),
                "{error}"
            );
        }
        assert!(
            common::json_lines(&out_file).is_empty(),
            "nothing of another subject is written"
        );
    }
}

danube_testkit::on_both_brokers! {
    async fn records_that_fail_their_json_schema_are_dead_lettered_and_committed(
        broker: Broker
    ) {
        const COUNT: u64 = 40;
        const TOPIC: &str = "/default/even";
        let dir = tempfile::tempdir().unwrap();
        // Only even sequence numbers are valid.
        std::fs::write(
            dir.path().join("even.json"),
            r#"{"type":"object","properties":{"seq":{"type":"integer","multipleOf":2}},"required":["seq"]}"#,
        )
        .unwrap();
        let schemas = schema_entry(
            TOPIC,
            "even-value",
            "json_schema",
            "even.json",
            "\"latest\"",
        );
        let config = datagen_config(dir.path(), &broker, "even", TOPIC, COUNT, &schemas);
        // Both topics exist before the recorders subscribe (a new
        // subscription starts at the latest message).
        broker.create_topic(TOPIC, 0, true).await.unwrap();
        broker.create_topic(&dlq("even"), 0, true).await.unwrap();
        let published = Tap::start(&broker.url(), TOPIC).await.unwrap();
        let dead_lettered = Tap::start(&broker.url(), &dlq("even")).await.unwrap();
        let host = Host::start(&guest("datagen-source"), &config, &[]);
        let state_file = dir.path().join("state/even.state.json");
        let done = wait_until_async(Duration::from_secs(60), || {
            committed_seq(&state_file) == Some(COUNT - 1)
        })
        .await;
        assert!(
            done,
            "last commit {:?}; log:\n{}",
            committed_seq(&state_file),
            host.log()
        );
        assert!(host.terminate(Duration::from_secs(30)).success());
        // Committed means acknowledged by the broker: all are there soon.
        let half = COUNT as usize / 2;
        assert!(
            published.wait_for(half, Duration::from_secs(10)).await
                && dead_lettered.wait_for(half, Duration::from_secs(10)).await,
            "{} published, {} dead-lettered",
            published.count(),
            dead_lettered.count()
        );

        let (published, dead) = (published.stored(), dead_lettered.stored());
        let seq = |payload: &[u8]| {
            serde_json::from_slice::<Value>(payload).unwrap()["seq"]
                .as_u64()
                .unwrap()
        };
        let mut valid: Vec<u64> = published.iter().map(|m| seq(&m.payload)).collect();
        let mut invalid: Vec<u64> = dead.iter().map(|m| seq(&m.payload)).collect();
        valid.sort();
        invalid.sort();
        assert_eq!(valid, (0..COUNT).step_by(2).collect::<Vec<_>>());
        assert_eq!(invalid, (1..COUNT).step_by(2).collect::<Vec<_>>());
        for message in &dead {
            let error = &message.attributes["dlq.error"];
            assert!(
                error.contains("does not match the JSON Schema") && error.contains("multiple of 2"),
                "{error}"
            );
            assert_eq!(message.attributes["dlq.error_class"], "invalid_data");
            assert_eq!(message.attributes["dlq.topic"], TOPIC);
            assert_eq!(message.attributes["dlq.connector"], "even");
            assert_eq!(
                message.attributes["seq"],
                seq(&message.payload).to_string(),
                "the record's own attributes are kept"
            );
            assert_eq!(
                message.schema_id, None,
                "the dead-letter topic has no schema"
            );
        }
        assert!(published.iter().all(|m| m.schema_version == Some(1)));
    }

    /// Two sinks on one Avro topic: one reads the records as JSON (the
    /// default), the other asks for them as published and writes the Avro
    /// binary.
    async fn avro_records_round_trip_from_datagen_to_file_sink_as_json_or_as_published(
        broker: Broker
    ) {
        const COUNT: u64 = 50;
        const TOPIC: &str = "/default/avro";
        broker.create_topic(TOPIC, 0, true).await.unwrap();
        let recorder = Tap::start(&broker.url(), TOPIC).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (json_sink, json_file) =
            start_file_sink(&broker, dir.path(), "avro-json", TOPIC, "avro-events", "").await;
        let (bytes_sink, bytes_file) = start_file_sink(
            &broker,
            dir.path(),
            "avro-bytes",
            TOPIC,
            "avro-events",
            "decode_avro = false",
        )
        .await;

        std::fs::write(dir.path().join("event.avsc"), EVENT_AVRO).unwrap();
        let schemas = schema_entry(TOPIC, "avro-events", "avro", "event.avsc", "\"latest\"");
        let source_config =
            datagen_config(dir.path(), &broker, "avro-source", TOPIC, COUNT, &schemas);
        let source = Host::start(&guest("datagen-source"), &source_config, &[]);

        let written = wait_until_async(Duration::from_secs(60), || {
            [&json_file, &bytes_file]
                .iter()
                .all(|file| common::json_lines(file).len() as u64 >= COUNT)
        })
        .await;
        assert!(
            written,
            "{} and {} written; source log:\n{}\nsink {}, log:\n{}\nsink {}, log:\n{}",
            common::json_lines(&json_file).len(),
            common::json_lines(&bytes_file).len(),
            source.log(),
            health_detail(&json_sink),
            json_sink.log(),
            health_detail(&bytes_sink),
            bytes_sink.log()
        );
        assert!(source.terminate(Duration::from_secs(30)).success());
        assert!(json_sink.terminate(Duration::from_secs(30)).success());
        assert!(bytes_sink.terminate(Duration::from_secs(30)).success());

        // On the broker: Avro binary, not JSON.
        assert!(
            recorder.wait_for(COUNT as usize, Duration::from_secs(10)).await,
            "{} of {COUNT} records recorded",
            recorder.count()
        );
        let published = recorder.stored();
        for message in &published {
            assert!(
                serde_json::from_slice::<Value>(&message.payload).is_err(),
                "{:?}",
                message.payload
            );
            assert_eq!(message.schema_version, Some(1));
        }
        // In the first sink: the records as JSON, with their schema.
        let mut seqs: Vec<u64> = Vec::new();
        for line in common::json_lines(&json_file) {
            let payload = &line["payload"];
            assert_eq!(payload["topic"], TOPIC, "{line}");
            assert_eq!(payload["key"], Value::Null, "{line}");
            assert_eq!(
                line["schema"],
                serde_json::json!({"subject": "avro-events", "version": 1})
            );
            seqs.push(payload["seq"].as_u64().expect("seq decoded as a number"));
        }
        seqs.sort();
        assert_eq!(seqs, (0..COUNT).collect::<Vec<_>>());
        // In the second: each message's bytes exactly as the broker holds
        // them (file-sink writes bytes that happen to be UTF-8 as a string,
        // others in base64).
        let mut offsets: Vec<u64> = Vec::new();
        for line in common::json_lines(&bytes_file) {
            let bytes = match (&line["payload"], &line["payload_base64"]) {
                (Value::String(text), Value::Null) => text.as_bytes().to_vec(),
                (Value::Null, Value::String(encoded)) => BASE64_STANDARD.decode(encoded).unwrap(),
                _ => panic!("not the Avro bytes: {line}"),
            };
            let offset = line["offset"].as_u64().unwrap();
            let message = published
                .iter()
                .find(|m| m.offset == offset)
                .unwrap();
            assert_eq!(bytes, message.payload, "offset {offset}");
            assert_eq!(
                line["schema"],
                serde_json::json!({"subject": "avro-events", "version": 1})
            );
            offsets.push(offset);
        }
        // Every offset once in each file: nothing was dead-lettered.
        offsets.sort();
        assert_eq!(offsets, (0..COUNT).collect::<Vec<_>>());
        if let Some(test) = broker.as_test() {
            for sink in ["avro-json", "avro-bytes"] {
                assert!(test.messages(&dlq(sink)).is_empty());
            }
        }
    }
}
