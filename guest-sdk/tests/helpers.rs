//! Native tests of the SDK's pure helpers.

use danube_connect_sdk::{
    BatchOutcome, ConnectorError, ProducerConfig, SinkRecord, SourceRecord, SubscriptionType,
    parse_config, state,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Reading {
    id: u32,
    temp: f64,
}

#[test]
fn source_record_from_json() {
    let r = SourceRecord::from_json("/default/t", &Reading { id: 1, temp: 2.5 }).unwrap();
    assert_eq!(r.topic, "/default/t");
    assert_eq!(r.payload, br#"{"id":1,"temp":2.5}"#);
    assert!(r.attributes.is_empty());
    assert_eq!(r.key, None);
    assert_eq!(r.offset, None);
}

#[test]
fn source_record_builders() {
    let r = SourceRecord::from_string("/default/t", "hi")
        .with_attribute("a", "1")
        .with_attribute("b", String::from("2"))
        .with_key("k")
        .with_offset("s", 9);
    assert_eq!(r.payload, b"hi");
    assert_eq!(
        r.attributes,
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(r.key.as_deref(), Some("k"));
    let o = r.offset.unwrap();
    assert_eq!((o.stream.as_str(), o.position), ("s", 9));

    let b = SourceRecord::from_bytes("/default/t", vec![0u8, 255]);
    assert_eq!(b.payload, vec![0, 255]);
}

#[test]
fn source_record_from_json_rejects_unrepresentable() {
    use std::collections::HashMap;
    let mut map = HashMap::new();
    map.insert(vec![1u8], 1); // non-string map keys cannot be JSON
    let err = SourceRecord::from_json("/default/t", &map).unwrap_err();
    assert!(matches!(err, ConnectorError::InvalidData(_)), "{err:?}");
}

#[test]
fn sink_record_payload_helpers() {
    let r = SinkRecord::new("/default/t", br#"{"id":7,"temp":1.0}"#.to_vec())
        .with_attribute("unit", "C")
        .with_key("dev")
        .with_offset(12)
        .with_publish_time(1_700_000_000_000_000)
        .with_redelivery_count(2);
    assert_eq!(
        r.payload_json::<Reading>().unwrap(),
        Reading { id: 7, temp: 1.0 }
    );
    assert_eq!(r.payload_str().unwrap(), r#"{"id":7,"temp":1.0}"#);
    assert_eq!(r.attribute("unit"), Some("C"));
    assert_eq!(r.attribute("none"), None);
    assert_eq!(r.attributes().len(), 1);
    assert_eq!(r.topic(), "/default/t");
    assert_eq!(r.key(), Some("dev"));
    assert_eq!(r.offset(), 12);
    assert_eq!(r.publish_time(), 1_700_000_000_000_000);
    assert_eq!(r.redelivery_count(), 2);
    assert_eq!(r.producer(), "");
    assert!(r.schema().is_none());
}

#[test]
fn sink_record_bad_payloads_are_invalid_data() {
    let r = SinkRecord::new("/default/t", b"not json".to_vec());
    let err = r.payload_json::<Reading>().unwrap_err();
    assert!(matches!(err, ConnectorError::InvalidData(_)), "{err:?}");

    let r = SinkRecord::new("/default/t", vec![0xff, 0xfe]);
    assert!(matches!(
        r.payload_str().unwrap_err(),
        ConnectorError::InvalidData(_)
    ));

    // Valid JSON of the wrong shape is invalid data too.
    let r = SinkRecord::new("/default/t", br#"{"id":"x"}"#.to_vec());
    assert!(matches!(
        r.payload_json::<Reading>().unwrap_err(),
        ConnectorError::InvalidData(_)
    ));
}

#[test]
fn error_constructors_and_display() {
    let e = ConnectorError::retryable(format_args!("timeout after {}s", 3));
    assert_eq!(e, ConnectorError::Retryable("timeout after 3s".into()));
    assert!(e.is_retryable());
    assert_eq!(e.to_string(), "retryable: timeout after 3s");
    assert_eq!(
        ConnectorError::invalid_data("x"),
        ConnectorError::InvalidData("x".into())
    );
    assert_eq!(
        ConnectorError::fatal("x"),
        ConnectorError::Fatal("x".into())
    );
    let c = ConnectorError::config(42);
    assert_eq!(c, ConnectorError::Config("42".into()));
    assert_eq!(c.class(), "config");
    assert_eq!(c.message(), "42");

    let json_err = serde_json::from_str::<u32>("x").unwrap_err();
    assert!(matches!(
        ConnectorError::from(json_err),
        ConnectorError::InvalidData(_)
    ));
}

#[test]
fn batch_outcome_collects_failures() {
    let outcome = BatchOutcome::from_results(vec![
        Ok(()),
        Err(ConnectorError::invalid_data("bad")),
        Ok(()),
        Err(ConnectorError::retryable("later")),
    ]);
    let idx: Vec<u32> = outcome.failures().iter().map(|f| f.index).collect();
    assert_eq!(idx, vec![1, 3]);
    assert!(!outcome.is_all_ok());
    assert!(BatchOutcome::all_ok().is_all_ok());
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cfg {
    topic: String,
    #[serde(default)]
    rate: u64,
    #[serde(default)]
    mode: SubscriptionType,
}

#[test]
fn config_parses_and_reports_key() {
    let c: Cfg = parse_config(r#"{"topic":"/a/b","rate":5,"mode":"key_shared"}"#).unwrap();
    assert_eq!((c.topic.as_str(), c.rate), ("/a/b", 5));
    assert_eq!(c.mode, SubscriptionType::KeyShared);

    let err = parse_config::<Cfg>(r#"{"topic":"/a/b","rate":"fast"}"#).unwrap_err();
    let ConnectorError::Config(msg) = err else {
        panic!("not a config error: {err:?}")
    };
    assert!(msg.contains("`rate`"), "{msg}");
    assert!(!msg.contains("line"), "{msg}");

    let err = parse_config::<Cfg>(r#"{"topic":"/a/b","rat":1}"#).unwrap_err();
    assert!(err.message().contains("unknown field `rat`"), "{err}");

    let err = parse_config::<Cfg>("").unwrap_err();
    assert!(err.message().contains("missing field `topic`"), "{err}");
}

#[test]
fn producer_config_defaults() {
    let p = ProducerConfig::new("/default/x");
    assert_eq!((p.partitions, p.reliable), (0, true));
    let p = p
        .with_partitions(4)
        .with_reliable(false)
        .with_schema_subject("s");
    assert_eq!(
        (p.partitions, p.reliable, p.schema_subject.as_deref()),
        (4, false, Some("s"))
    );
}

#[test]
fn native_state_store_round_trips() {
    assert_eq!(state::get("k"), None);
    state::put_json("k", &41u64).unwrap();
    assert_eq!(state::get_json::<u64>("k").unwrap(), Some(41));
    state::delete("k");
    assert_eq!(state::get("k"), None);
}
