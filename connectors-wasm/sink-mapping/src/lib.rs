//! What the database sinks share: the `routes.columns` and `routes.metadata`
//! configuration, the column types, and turning a field of a record's JSON
//! payload into a typed value for its column, or into invalid data that names
//! the column and the type it wanted (never the value, which may be private).
//!
//! What differs between databases — type names, what an integer timestamp
//! counts, whether text may hold NUL — is a [`Dialect`] each sink implements.

use danube_connect_sdk::{ConnectorError, SinkRecord};
use serde::Deserialize;
use serde_json::Value as Json;
pub use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The column types a payload field converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// From a JSON string.
    Text,
    /// From a JSON integer in the 32-bit range.
    Int,
    /// From a JSON integer in the 64-bit range.
    Bigint,
    /// From any JSON number.
    Double,
    /// From `true` or `false`.
    Bool,
    /// From an RFC 3339 string or an integer the [`Dialect`] reads.
    Timestamp,
    /// From any JSON value.
    Json,
}

/// One converted, non-null value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i32),
    Bigint(i64),
    Double(f64),
    Bool(bool),
    Timestamp(OffsetDateTime),
    Json(Json),
}

/// What a database makes of the column types.
pub trait Dialect {
    /// Whether a text value may contain NUL characters.
    const TEXT_ALLOWS_NUL: bool;

    /// The column type as the database names it, in statements and messages.
    fn type_name(kind: ColumnType) -> &'static str;

    /// What a field must be to convert to `kind`, for messages.
    fn expects(kind: ColumnType) -> &'static str;

    /// A column name as messages show it.
    fn column_label(name: &str) -> String;

    /// A field of a `timestamp` column as a time the database can store:
    /// [`rfc3339`] plus the database's reading of an integer.
    fn timestamp(field: &Json) -> Option<OffsetDateTime>;
}

/// The time an RFC 3339 string field names.
pub fn rfc3339(field: &Json) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(field.as_str()?, &Rfc3339).ok()
}

impl ColumnType {
    /// Converts a (non-null) field into this type, or says why not without
    /// showing the field.
    pub fn convert<D: Dialect>(self, field: &Json) -> Result<Value, String> {
        let mismatch = || format!("expected {}, found {}", D::expects(self), describe(field));
        match (self, field) {
            (ColumnType::Text, Json::String(s)) if !D::TEXT_ALLOWS_NUL && s.contains('\0') => {
                Err("text must not contain NUL characters".into())
            }
            (ColumnType::Text, Json::String(s)) => Ok(Value::Text(s.clone())),
            (ColumnType::Int, Json::Number(n)) => n
                .as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .map(Value::Int)
                .ok_or_else(mismatch),
            (ColumnType::Bigint, Json::Number(n)) => {
                n.as_i64().map(Value::Bigint).ok_or_else(mismatch)
            }
            (ColumnType::Double, Json::Number(n)) => {
                n.as_f64().map(Value::Double).ok_or_else(mismatch)
            }
            (ColumnType::Bool, Json::Bool(b)) => Ok(Value::Bool(*b)),
            (ColumnType::Timestamp, field) => D::timestamp(field)
                .map(Value::Timestamp)
                .ok_or_else(mismatch),
            (ColumnType::Json, field) => Ok(Value::Json(field.clone())),
            _ => Err(mismatch()),
        }
    }
}

/// What a JSON value is, for messages (never the value itself).
fn describe(field: &Json) -> &'static str {
    match field {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a fractional number",
        Json::Number(_) => "an integer out of range",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// `[[<sink>.routes.columns]]`: one column filled from the JSON payload.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name (required).
    pub column: String,
    /// Dotted path into the JSON payload (required), like `a.b.c`.
    pub path: String,
    /// Column type (required): `text`, `int`, `bigint`, `double`, `bool`,
    /// `timestamp` or `json`. A field that does not convert to it makes the
    /// record invalid data.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// true: a missing or null field is NULL; false (the default): it makes
    /// the record invalid data.
    #[serde(default)]
    pub nullable: bool,
}

impl Column {
    /// This column's value in `payload`; see [`field_value`].
    pub fn value<D: Dialect>(&self, payload: &Json) -> Result<Option<Value>, ConnectorError> {
        field_value::<D>(payload, &self.column, &self.path, self.kind, self.nullable)
    }
}

/// The value of column `column` at `path` in `payload`: `None` for a
/// missing or null field of a nullable column, invalid data for one of a
/// column that is not, or for a field that does not convert to `kind`.
pub fn field_value<D: Dialect>(
    payload: &Json,
    column: &str,
    path: &str,
    kind: ColumnType,
    nullable: bool,
) -> Result<Option<Value>, ConnectorError> {
    match lookup(payload, path) {
        None | Some(Json::Null) if nullable => Ok(None),
        None | Some(Json::Null) => Err(ConnectorError::invalid_data(format!(
            "column {}: field `{path}` is missing or null (set `nullable = true` to allow it)",
            D::column_label(column)
        ))),
        Some(field) => kind.convert::<D>(field).map(Some).map_err(|why| {
            ConnectorError::invalid_data(format!(
                "column {} ({}): field `{path}`: {why}",
                D::column_label(column),
                D::type_name(kind)
            ))
        }),
    }
}

/// The record's payload as JSON, read only when some column needs it.
pub fn payload(record: &SinkRecord, columns: &[Column]) -> Result<Json, ConnectorError> {
    if columns.is_empty() {
        Ok(Json::Null)
    } else {
        record.payload_json()
    }
}

/// The value at a dotted `path` (`a.b.c`) in `payload`, if every step exists.
pub fn lookup<'a>(payload: &'a Json, path: &str) -> Option<&'a Json> {
    path.split('.')
        .try_fold(payload, |value, key| value.as_object()?.get(key))
}

/// `metadata = { ... }`: which columns receive the Danube metadata of each
/// record; none by default.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Column that receives the topic the record was read from; unset: none.
    pub topic: Option<String>,
    /// Column that receives the record's offset in its topic or partition;
    /// unset: none.
    pub offset: Option<String>,
    /// Column that receives the time the record was published; unset: none.
    pub publish_time: Option<String>,
    /// Column that receives the name of the producer that published the
    /// record; unset: none.
    pub producer: Option<String>,
}

/// Danube metadata that can fill a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaField {
    Topic,
    Offset,
    PublishTime,
    Producer,
}

impl MetaField {
    /// The key under `metadata` that names its column.
    pub fn key(self) -> &'static str {
        match self {
            MetaField::Topic => "topic",
            MetaField::Offset => "offset",
            MetaField::PublishTime => "publish_time",
            MetaField::Producer => "producer",
        }
    }
}

impl Metadata {
    /// The configured metadata columns, in the order topic, offset,
    /// publish time, producer.
    pub fn columns(&self) -> impl Iterator<Item = (MetaField, &str)> {
        [
            (MetaField::Topic, &self.topic),
            (MetaField::Offset, &self.offset),
            (MetaField::PublishTime, &self.publish_time),
            (MetaField::Producer, &self.producer),
        ]
        .into_iter()
        .filter_map(|(field, name)| name.as_deref().map(|name| (field, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A dialect for the tests: integer timestamps are seconds, text may not
    /// hold NUL.
    struct Test;

    impl Dialect for Test {
        const TEXT_ALLOWS_NUL: bool = false;
        fn type_name(_: ColumnType) -> &'static str {
            "T"
        }
        fn expects(kind: ColumnType) -> &'static str {
            match kind {
                ColumnType::Text => "a string",
                ColumnType::Int => "an integer within Int32",
                _ => "something",
            }
        }
        fn column_label(name: &str) -> String {
            format!("<{name}>")
        }
        fn timestamp(field: &Json) -> Option<OffsetDateTime> {
            rfc3339(field).or_else(|| OffsetDateTime::from_unix_timestamp(field.as_i64()?).ok())
        }
    }

    #[test]
    fn lookup_follows_dotted_paths() {
        let v = json!({"a": {"b": {"c": 3}}, "x": 1, "l": [1]});
        assert_eq!(lookup(&v, "a.b.c"), Some(&json!(3)));
        assert_eq!(lookup(&v, "x"), Some(&json!(1)));
        assert_eq!(lookup(&v, "a.z"), None);
        assert_eq!(lookup(&v, "x.y"), None);
        assert_eq!(lookup(&v, "l.0"), None);
    }

    #[test]
    fn converts_each_type_and_refuses_what_does_not_fit() {
        use ColumnType::*;
        let convert = |field: serde_json::Value, kind: ColumnType| kind.convert::<Test>(&field);
        assert_eq!(convert(json!("s"), Text), Ok(Value::Text("s".into())));
        assert_eq!(
            convert(json!(1), Text),
            Err("expected a string, found an integer out of range".into())
        );
        assert!(convert(json!("a\u{0}b"), Text).unwrap_err().contains("NUL"));
        assert_eq!(convert(json!(-5), Int), Ok(Value::Int(-5)));
        assert!(convert(json!(2_147_483_647), Int).is_ok());
        assert!(convert(json!(2_147_483_648_i64), Int).is_err());
        assert!(convert(json!(1.5), Int).unwrap_err().contains("fractional"));
        assert!(
            convert(json!("7"), Int)
                .unwrap_err()
                .contains("found a string")
        );
        assert_eq!(
            convert(json!(3_000_000_000_i64), Bigint),
            Ok(Value::Bigint(3_000_000_000))
        );
        assert!(convert(json!(u64::MAX), Bigint).is_err());
        assert_eq!(convert(json!(2), Double), Ok(Value::Double(2.0)));
        assert!(convert(json!("2.0"), Double).is_err());
        assert_eq!(convert(json!(true), Bool), Ok(Value::Bool(true)));
        assert!(convert(json!(1), Bool).is_err());
        let at = OffsetDateTime::from_unix_timestamp(1_704_161_045).unwrap();
        assert_eq!(
            convert(json!("2024-01-02T03:04:05+01:00"), Timestamp),
            Ok(Value::Timestamp(at))
        );
        assert_eq!(
            convert(json!(1_704_161_045), Timestamp),
            Ok(Value::Timestamp(at))
        );
        assert!(convert(json!("yesterday"), Timestamp).is_err());
        assert_eq!(
            convert(json!({"a": [1]}), Json),
            Ok(Value::Json(json!({"a": [1]})))
        );
    }

    #[test]
    fn fields_convert_or_are_invalid_data_naming_column_and_type() {
        let column = |nullable| Column {
            column: "n".into(),
            path: "v.n".into(),
            kind: ColumnType::Int,
            nullable,
        };
        let payload = json!({"v": {"n": 7}, "w": {"n": "secret"}});
        assert_eq!(
            column(false).value::<Test>(&payload).unwrap(),
            Some(Value::Int(7))
        );
        assert_eq!(column(true).value::<Test>(&json!({})).unwrap(), None);
        assert_eq!(
            column(true)
                .value::<Test>(&json!({"v": {"n": null}}))
                .unwrap(),
            None
        );

        let e = column(false).value::<Test>(&json!({})).unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidData(_)), "{e:?}");
        assert_eq!(
            e.message(),
            "column <n>: field `v.n` is missing or null (set `nullable = true` to allow it)"
        );
        let e = field_value::<Test>(&payload, "n", "w.n", ColumnType::Int, true).unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidData(_)), "{e:?}");
        assert_eq!(
            e.message(),
            "column <n> (T): field `w.n`: expected an integer within Int32, found a string"
        );
    }

    #[test]
    fn the_payload_is_read_only_when_a_column_needs_it() {
        let record = SinkRecord::new("/d/t", b"not json".to_vec());
        assert_eq!(payload(&record, &[]).unwrap(), Json::Null);
        let columns: Vec<Column> =
            serde_json::from_str(r#"[{"column": "c", "path": "p", "type": "text"}]"#).unwrap();
        let e = payload(&record, &columns).unwrap_err();
        assert!(e.message().contains("not valid JSON"), "{e}");
    }

    #[test]
    fn config_keys_and_defaults() {
        let c: Column =
            serde_json::from_str(r#"{"column": "c", "path": "a.b", "type": "timestamp"}"#).unwrap();
        assert_eq!((c.kind, c.nullable), (ColumnType::Timestamp, false));
        assert!(
            serde_json::from_str::<Column>(r#"{"column": "c", "path": "p", "type": "float"}"#)
                .unwrap_err()
                .to_string()
                .contains("float")
        );
        assert!(
            serde_json::from_str::<Metadata>(r#"{"ofset": "o"}"#)
                .unwrap_err()
                .to_string()
                .contains("ofset")
        );
        let m: Metadata = serde_json::from_str(r#"{"producer": "p", "topic": "t"}"#).unwrap();
        assert_eq!(
            m.columns().collect::<Vec<_>>(),
            [(MetaField::Topic, "t"), (MetaField::Producer, "p")]
        );
    }
}
