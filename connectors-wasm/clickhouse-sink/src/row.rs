//! Turning a record into one JSONEachRow line, converting every field to its
//! column's type here, so a record that does not fit is reported alone
//! instead of failing the whole insert.

use danube_connect_sdk::{ConnectorError, SinkRecord};
use danube_sink_mapping::{ColumnType, Dialect, MetaField, OffsetDateTime, rfc3339};
use serde_json::{Map, Value};

use crate::config::Route;

/// ClickHouse's names for the column types, and its reading of them.
pub struct ClickHouse;

impl Dialect for ClickHouse {
    const TEXT_ALLOWS_NUL: bool = true;

    fn type_name(kind: ColumnType) -> &'static str {
        match kind {
            ColumnType::Text | ColumnType::Json => "String",
            ColumnType::Int => "Int32",
            ColumnType::Bigint => "Int64",
            ColumnType::Double => "Float64",
            ColumnType::Bool => "UInt8",
            ColumnType::Timestamp => "DateTime",
        }
    }

    fn expects(kind: ColumnType) -> &'static str {
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

    fn column_label(name: &str) -> String {
        format!("`{name}`")
    }

    /// `DateTime` holds whole seconds since the epoch in 32 unsigned bits, so
    /// an integer counts seconds, and only 1970 to 2106 fits.
    fn timestamp(field: &Value) -> Option<OffsetDateTime> {
        let time =
            rfc3339(field).or_else(|| OffsetDateTime::from_unix_timestamp(field.as_i64()?).ok())?;
        u32::try_from(time.unix_timestamp()).is_ok().then_some(time)
    }
}

/// The ClickHouse type of a metadata column.
pub fn metadata_type(field: MetaField) -> &'static str {
    match field {
        MetaField::Topic | MetaField::Producer => "String",
        // Publish time: milliseconds since the Unix epoch.
        MetaField::Offset | MetaField::PublishTime => "UInt64",
    }
}

/// A converted value as JSONEachRow writes it for its ClickHouse type.
fn json(value: danube_sink_mapping::Value) -> Value {
    use danube_sink_mapping::Value as Typed;
    match value {
        Typed::Text(text) => Value::from(text),
        Typed::Int(n) => Value::from(n),
        Typed::Bigint(n) => Value::from(n),
        Typed::Double(x) => Value::from(x),
        Typed::Bool(b) => Value::from(u8::from(b)),
        Typed::Timestamp(time) => Value::from(time.unix_timestamp()),
        // `String` columns hold JSON as its text.
        Typed::Json(json) => Value::from(json.to_string()),
    }
}

/// Appends `record` to `out` as one JSONEachRow line for `route`; on error
/// `out` is left as it was.
pub fn encode(route: &Route, record: &SinkRecord, out: &mut Vec<u8>) -> Result<(), ConnectorError> {
    let payload = danube_sink_mapping::payload(record, &route.columns)?;
    let mut object = Map::new();
    for column in &route.columns {
        let value = column
            .value::<ClickHouse>(&payload)?
            .map_or(Value::Null, json);
        object.insert(column.column.clone(), value);
    }
    for (field, name) in route.metadata.columns() {
        let value = match field {
            MetaField::Topic => Value::from(record.topic()),
            MetaField::Offset => Value::from(record.offset()),
            MetaField::PublishTime => Value::from(record.publish_time()),
            MetaField::Producer => Value::from(record.producer()),
        };
        object.insert(name.to_string(), value);
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
    fn values_take_their_clickhouse_form() {
        let convert = |field: Value, kind: ColumnType| kind.convert::<ClickHouse>(&field).map(json);
        assert_eq!(convert(json!(true), ColumnType::Bool), Ok(json!(1)));
        assert_eq!(convert(json!(false), ColumnType::Bool), Ok(json!(0)));
        assert_eq!(
            convert(json!({"a": [1]}), ColumnType::Json),
            Ok(json!(r#"{"a":[1]}"#))
        );
        assert_eq!(
            convert(json!("a\u{0}b"), ColumnType::Text),
            Ok(json!("a\u{0}b"))
        );
    }

    #[test]
    fn timestamps_are_seconds_from_1970_to_2106() {
        let convert = |field: Value| {
            ColumnType::Timestamp
                .convert::<ClickHouse>(&field)
                .map(json)
        };
        assert_eq!(
            convert(json!("2024-01-02T03:04:05+01:00")),
            Ok(json!(1_704_161_045))
        );
        assert_eq!(convert(json!(1_700_000_000)), Ok(json!(1_700_000_000)));
        assert_eq!(convert(json!(u32::MAX)), Ok(json!(u32::MAX)));
        assert!(convert(json!(u64::from(u32::MAX) + 1)).is_err());
        assert!(convert(json!(-1)).is_err());
        assert!(convert(json!("1969-12-31T23:59:59Z")).is_err());
        assert!(
            convert(json!("yesterday"))
                .unwrap_err()
                .contains("between 1970 and 2106")
        );
    }
}
