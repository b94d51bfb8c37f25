//! Turning a record into one JSONEachRow line, converting every field to its
//! column's type here, so a record that does not fit is reported alone
//! instead of failing the whole insert.

use chrono::DateTime;
use danube_connect_sdk::{ConnectorError, SinkRecord};
use serde_json::{Map, Value};

use crate::config::{ColumnType, Route};

/// The value at a dotted `path` (`a.b.c`) in `payload`, if every step exists.
fn lookup<'a>(payload: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(payload, |value, key| value.get(key))
}

/// `value` converted to what ClickHouse's JSONEachRow reads for `kind`, or
/// why it does not fit.
fn convert(value: &Value, kind: ColumnType) -> Result<Value, String> {
    let mismatch = || format!("expected {}, got {value}", describe(kind));
    match kind {
        ColumnType::Text => value.as_str().map(Value::from).ok_or_else(mismatch),
        ColumnType::Int => value
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Value::from)
            .ok_or_else(mismatch),
        ColumnType::Bigint => value.as_i64().map(Value::from).ok_or_else(mismatch),
        ColumnType::Double => value.as_f64().map(Value::from).ok_or_else(mismatch),
        ColumnType::Bool => value
            .as_bool()
            .map(|b| Value::from(u8::from(b)))
            .ok_or_else(mismatch),
        ColumnType::Timestamp => timestamp_seconds(value)
            .and_then(|s| u32::try_from(s).ok())
            .map(Value::from)
            .ok_or_else(mismatch),
        ColumnType::Json => Ok(Value::from(value.to_string())),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 string or an integer.
fn timestamp_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp()),
        other => other.as_i64(),
    }
}

/// What a column type accepts, for error messages.
fn describe(kind: ColumnType) -> &'static str {
    match kind {
        ColumnType::Text => "a string",
        ColumnType::Int => "an integer within Int32",
        ColumnType::Bigint => "an integer within Int64",
        ColumnType::Double => "a number",
        ColumnType::Bool => "true or false",
        ColumnType::Timestamp => {
            "an RFC 3339 time or integer seconds since the epoch, between 1970 and 2106"
        }
        ColumnType::Json => "any JSON",
    }
}

/// Appends `record` to `out` as one JSONEachRow line for `route`; on error
/// `out` is left as it was.
pub fn encode(route: &Route, record: &SinkRecord, out: &mut Vec<u8>) -> Result<(), ConnectorError> {
    let payload: Value = if route.columns.is_empty() {
        Value::Null
    } else {
        record.payload_json()?
    };
    let mut object = Map::new();
    for column in &route.columns {
        let value = match lookup(&payload, &column.path) {
            None | Some(Value::Null) if column.nullable => Value::Null,
            None | Some(Value::Null) => {
                return Err(ConnectorError::invalid_data(format!(
                    "column `{}`: field `{}` is missing or null (set `nullable = true` to allow it)",
                    column.column, column.path
                )));
            }
            Some(value) => convert(value, column.kind).map_err(|why| {
                ConnectorError::invalid_data(format!(
                    "column `{}` ({}): field `{}`: {why}",
                    column.column,
                    column.kind.clickhouse_type(),
                    column.path
                ))
            })?,
        };
        object.insert(column.column.clone(), value);
    }
    let metadata = &route.metadata;
    let values = [
        (&metadata.topic, Value::from(record.topic())),
        (&metadata.offset, Value::from(record.offset())),
        (&metadata.publish_time, Value::from(record.publish_time())),
        (&metadata.producer, Value::from(record.producer())),
    ];
    for (name, value) in values {
        if let Some(name) = name {
            object.insert(name.clone(), value);
        }
    }
    serde_json::to_writer(&mut *out, &object)
        .map_err(|e| ConnectorError::fatal(format!("encoding a row: {e}")))?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_follows_dotted_paths() {
        let v = json!({"a": {"b": {"c": 3}}, "x": 1});
        assert_eq!(lookup(&v, "a.b.c"), Some(&json!(3)));
        assert_eq!(lookup(&v, "x"), Some(&json!(1)));
        assert_eq!(lookup(&v, "a.z"), None);
        assert_eq!(lookup(&v, "x.y"), None);
    }

    #[test]
    fn converts_each_type_and_refuses_what_does_not_fit() {
        use ColumnType::*;
        assert_eq!(convert(&json!("s"), Text), Ok(json!("s")));
        assert!(convert(&json!(1), Text).is_err());
        assert_eq!(convert(&json!(-5), Int), Ok(json!(-5)));
        assert!(convert(&json!(3_000_000_000i64), Int).is_err());
        assert!(convert(&json!(1.5), Int).is_err());
        assert!(convert(&json!("7"), Int).is_err());
        assert_eq!(
            convert(&json!(3_000_000_000i64), Bigint),
            Ok(json!(3_000_000_000i64))
        );
        assert!(convert(&json!(u64::MAX), Bigint).is_err());
        assert_eq!(convert(&json!(2), Double), Ok(json!(2.0)));
        assert!(convert(&json!("2.0"), Double).is_err());
        assert_eq!(convert(&json!(true), Bool), Ok(json!(1)));
        assert_eq!(convert(&json!(false), Bool), Ok(json!(0)));
        assert!(convert(&json!(1), Bool).is_err());
        assert_eq!(
            convert(&json!("2024-01-02T03:04:05+01:00"), Timestamp),
            Ok(json!(1_704_161_045))
        );
        assert_eq!(
            convert(&json!(1_700_000_000), Timestamp),
            Ok(json!(1_700_000_000))
        );
        assert!(convert(&json!("yesterday"), Timestamp).is_err());
        assert!(convert(&json!("1969-12-31T23:59:59Z"), Timestamp).is_err());
        assert_eq!(convert(&json!({"a": [1]}), Json), Ok(json!(r#"{"a":[1]}"#)));
    }
}
