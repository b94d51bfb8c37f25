//! A route's table: its columns, where each value comes from, the conversion
//! of JSON into typed values, and the SQL that creates and fills the table.
//!
//! A batch is written with one statement per table,
//! `INSERT ... SELECT * FROM unnest($1, $2, ...) ON CONFLICT (key) DO UPDATE`,
//! with one binary array parameter per column: any number of rows in one
//! statement and one round trip, with no limit on parameters and no SQL text
//! built from data.

use std::error::Error;

use bytes::BytesMut;
use danube_connect_sdk::{ConnectorError, SinkRecord};
use danube_sink_mapping::{
    ColumnType, Dialect, MetaField, OffsetDateTime, Value, field_value, rfc3339,
};
use postgres_protocol::Oid;
use postgres_protocol::escape::escape_identifier;
use postgres_types::{IsNull, Kind, ToSql, Type, to_sql_checked};
use serde_json::Value as Json;

/// PostgreSQL's names for the column types, and its reading of them.
pub struct Postgres;

impl Dialect for Postgres {
    /// `text` cannot hold NUL characters.
    const TEXT_ALLOWS_NUL: bool = false;

    /// The type as written in `CREATE TABLE`.
    fn type_name(kind: ColumnType) -> &'static str {
        match kind {
            ColumnType::Text => "text",
            ColumnType::Int => "integer",
            ColumnType::Bigint => "bigint",
            ColumnType::Double => "double precision",
            ColumnType::Bool => "boolean",
            ColumnType::Timestamp => "timestamptz",
            ColumnType::Json => "jsonb",
        }
    }

    fn expects(kind: ColumnType) -> &'static str {
        match kind {
            ColumnType::Text => "a string",
            ColumnType::Int => "an integer between -2147483648 and 2147483647",
            ColumnType::Bigint => "a 64-bit integer",
            ColumnType::Double => "a number",
            ColumnType::Bool => "true or false",
            ColumnType::Timestamp => {
                "an RFC 3339 string or milliseconds since the epoch (an integer)"
            }
            ColumnType::Json => "any JSON value",
        }
    }

    fn column_label(name: &str) -> String {
        name.to_string()
    }

    /// `timestamptz` has microseconds: an integer counts milliseconds, as
    /// Danube's publish time does.
    fn timestamp(field: &Json) -> Option<OffsetDateTime> {
        rfc3339(field).or_else(|| field.as_i64().and_then(epoch_millis))
    }
}

/// The type of the array parameter that carries a column's values.
fn array_type(kind: ColumnType) -> Type {
    match kind {
        ColumnType::Text => Type::TEXT_ARRAY,
        ColumnType::Int => Type::INT4_ARRAY,
        ColumnType::Bigint => Type::INT8_ARRAY,
        ColumnType::Double => Type::FLOAT8_ARRAY,
        ColumnType::Bool => Type::BOOL_ARRAY,
        ColumnType::Timestamp => Type::TIMESTAMPTZ_ARRAY,
        ColumnType::Json => Type::JSONB_ARRAY,
    }
}

/// The type of one value.
fn element_type(kind: ColumnType) -> Type {
    match array_type(kind).kind() {
        Kind::Array(member) => member.clone(),
        _ => unreachable!("array_type() returns array types"),
    }
}

/// Milliseconds since the Unix epoch as a time, if representable.
fn epoch_millis(millis: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()
}

/// The column type of a metadata column.
pub fn metadata_type(field: MetaField) -> ColumnType {
    match field {
        MetaField::Topic | MetaField::Producer => ColumnType::Text,
        MetaField::Offset => ColumnType::Bigint,
        MetaField::PublishTime => ColumnType::Timestamp,
    }
}

/// The record's `field` as a value of [`metadata_type`].
fn metadata_value(field: MetaField, record: &SinkRecord) -> Result<Value, ConnectorError> {
    match field {
        MetaField::Topic => Ok(Value::Text(record.topic().to_string())),
        MetaField::Producer => Ok(Value::Text(record.producer().to_string())),
        MetaField::Offset => i64::try_from(record.offset())
            .map(Value::Bigint)
            .map_err(|_| {
                ConnectorError::invalid_data(format!(
                    "offset {} does not fit a bigint",
                    record.offset()
                ))
            }),
        MetaField::PublishTime => i64::try_from(record.publish_time())
            .ok()
            .and_then(epoch_millis)
            .map(Value::Timestamp)
            .ok_or_else(|| {
                ConnectorError::invalid_data(format!(
                    "publish time {} is out of range",
                    record.publish_time()
                ))
            }),
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A dotted path into the JSON payload.
    Path(String),
    Meta(MetaField),
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub source: Source,
    pub column_type: ColumnType,
    pub nullable: bool,
}

/// One value of a row, NULL as `None`, encoded in PostgreSQL's binary
/// format by the `ToSql` of its Rust type.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell(pub Option<Value>);

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(Value::Text(v)) => v.to_sql(ty, out),
            Some(Value::Int(v)) => v.to_sql(ty, out),
            Some(Value::Bigint(v)) => v.to_sql(ty, out),
            Some(Value::Double(v)) => v.to_sql(ty, out),
            Some(Value::Bool(v)) => v.to_sql(ty, out),
            Some(Value::Timestamp(v)) => v.to_sql(ty, out),
            Some(Value::Json(v)) => v.to_sql(ty, out),
        }
    }

    /// A value is only ever bound to the type its column converted it to.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A record converted into one value per column, in column order.
pub type Row = Vec<Cell>;

/// A route's table and the statements that create and fill it.
#[derive(Debug)]
pub struct Table {
    /// The quoted, possibly schema-qualified name, for messages and SQL.
    pub name: String,
    pub columns: Vec<Column>,
    /// Indices into `columns` of the upsert key.
    pub key: Vec<usize>,
    pub create_sql: String,
    pub insert_sql: String,
}

impl Table {
    /// `name` is the table name split at its schema dot.
    pub fn new(name: &[&str], columns: Vec<Column>, key: Vec<usize>) -> Table {
        let name = name
            .iter()
            .map(|part| escape_identifier(part))
            .collect::<Vec<_>>()
            .join(".");
        let quoted = |c: &Column| escape_identifier(&c.name);
        let list = |indices: &mut dyn Iterator<Item = usize>| {
            indices
                .map(|i| quoted(&columns[i]))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let all = list(&mut (0..columns.len()));
        let key_list = list(&mut key.iter().copied());

        let definitions: Vec<String> = columns
            .iter()
            .map(|c| {
                let null = if c.nullable { "" } else { " NOT NULL" };
                format!("{} {}{null}", quoted(c), Postgres::type_name(c.column_type))
            })
            .collect();
        let create_sql = format!(
            "CREATE TABLE IF NOT EXISTS {name} ({}, PRIMARY KEY ({key_list}))",
            definitions.join(", ")
        );

        let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let updates: Vec<String> = (0..columns.len())
            .filter(|i| !key.contains(i))
            .map(|i| format!("{0} = EXCLUDED.{0}", quoted(&columns[i])))
            .collect();
        let on_conflict = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let insert_sql = format!(
            "INSERT INTO {name} ({all}) SELECT * FROM unnest({}) ON CONFLICT ({key_list}) {on_conflict}",
            params.join(", ")
        );
        Table {
            name,
            columns,
            key,
            create_sql,
            insert_sql,
        }
    }

    /// The types of the insert's parameters: one array per column.
    pub fn param_types(&self) -> Vec<Oid> {
        self.columns
            .iter()
            .map(|c| array_type(c.column_type).oid())
            .collect()
    }

    /// Encodes the insert's parameters for `rows`: one array per column.
    pub fn params(&self, rows: &[&Row]) -> Result<Vec<BytesMut>, Box<dyn Error + Sync + Send>> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let values: Vec<&Cell> = rows.iter().map(|row| &row[i]).collect();
                let mut out = BytesMut::new();
                values.to_sql(&array_type(column.column_type), &mut out)?;
                Ok(out)
            })
            .collect()
    }

    /// The row's upsert key in binary form, to find records of one batch
    /// that would update the same row.
    pub fn key_of(&self, row: &Row) -> Vec<u8> {
        let mut out = BytesMut::new();
        for &i in &self.key {
            let start = out.len();
            out.extend_from_slice(&[0; 4]);
            // Key columns are never null and always convert: encoding cannot fail.
            let _ = row[i].to_sql(&element_type(self.columns[i].column_type), &mut out);
            let len = (out.len() - start - 4) as u32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        out.to_vec()
    }

    /// Converts a record into a row, or says (without echoing values) why it
    /// cannot be one: invalid data.
    pub fn row(&self, record: &SinkRecord) -> Result<Row, ConnectorError> {
        let mut payload: Option<Json> = None;
        self.columns
            .iter()
            .map(|column| {
                let value = match &column.source {
                    Source::Meta(field) => Some(metadata_value(*field, record)?),
                    Source::Path(path) => {
                        let payload = match &payload {
                            Some(payload) => payload,
                            None => payload.insert(record.payload_json()?),
                        };
                        field_value::<Postgres>(
                            payload,
                            &column.name,
                            path,
                            column.column_type,
                            column.nullable,
                        )?
                    }
                };
                Ok(Cell(value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn column(name: &str, path: &str, column_type: ColumnType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            source: Source::Path(path.into()),
            column_type,
            nullable,
        }
    }

    fn table() -> Table {
        Table::new(
            &["public", "Readings"],
            vec![
                column("device", "device", ColumnType::Text, false),
                column("temp", "reading.temp", ColumnType::Double, true),
                column("at", "at", ColumnType::Timestamp, false),
                Column {
                    name: "danube_offset".into(),
                    source: Source::Meta(MetaField::Offset),
                    column_type: ColumnType::Bigint,
                    nullable: false,
                },
            ],
            vec![0, 3],
        )
    }

    #[test]
    fn statements_quote_names_and_upsert_on_the_key() {
        let t = table();
        assert_eq!(
            t.create_sql,
            "CREATE TABLE IF NOT EXISTS \"public\".\"Readings\" (\"device\" text NOT NULL, \
             \"temp\" double precision, \"at\" timestamptz NOT NULL, \"danube_offset\" bigint NOT NULL, \
             PRIMARY KEY (\"device\", \"danube_offset\"))"
        );
        assert_eq!(
            t.insert_sql,
            "INSERT INTO \"public\".\"Readings\" (\"device\", \"temp\", \"at\", \"danube_offset\") \
             SELECT * FROM unnest($1, $2, $3, $4) ON CONFLICT (\"device\", \"danube_offset\") \
             DO UPDATE SET \"temp\" = EXCLUDED.\"temp\", \"at\" = EXCLUDED.\"at\""
        );
        assert_eq!(
            t.param_types(),
            [
                Type::TEXT_ARRAY,
                Type::FLOAT8_ARRAY,
                Type::TIMESTAMPTZ_ARRAY,
                Type::INT8_ARRAY
            ]
            .map(|t| t.oid())
        );
        let only_keys = Table::new(
            &["k"],
            vec![column("id", "id", ColumnType::Int, false)],
            vec![0],
        );
        assert!(
            only_keys
                .insert_sql
                .ends_with("ON CONFLICT (\"id\") DO NOTHING")
        );
    }

    #[test]
    fn records_convert_to_typed_rows() {
        let t = table();
        let record = |payload: Json| {
            SinkRecord::new("/d/t", serde_json::to_vec(&payload).unwrap()).with_offset(9)
        };
        let row = t
            .row(&record(
                json!({"device": "d1", "reading": {"temp": 21.5}, "at": "2024-05-01T10:00:00Z"}),
            ))
            .unwrap();
        let at = || {
            Cell(Some(Value::Timestamp(
                OffsetDateTime::from_unix_timestamp(1_714_557_600).unwrap(),
            )))
        };
        assert_eq!(row[0], Cell(Some(Value::Text("d1".into()))));
        assert_eq!(row[1], Cell(Some(Value::Double(21.5))));
        assert_eq!(row[2], at());
        assert_eq!(row[3], Cell(Some(Value::Bigint(9))));
        let row = t
            .row(&record(
                json!({"device": "d1", "at": 1_714_557_600_000_i64}),
            ))
            .unwrap();
        assert_eq!(row[1], Cell(None), "a missing nullable field is NULL");
        assert_eq!(row[2], at(), "an integer timestamp counts milliseconds");
    }

    #[test]
    fn records_that_do_not_convert_say_why_without_their_values() {
        let t = table();
        let why = |payload: &[u8]| {
            let e = t
                .row(&SinkRecord::new("/d/t", payload.to_vec()))
                .unwrap_err();
            assert!(matches!(e, ConnectorError::InvalidData(_)), "{e:?}");
            e.message().to_string()
        };
        let e = why(br#"{"device": 42, "at": 0}"#);
        assert_eq!(
            e,
            "column device (text): field `device`: expected a string, found an integer out of range"
        );
        let e = why(br#"{"device": "secret-ish", "at": "yesterday"}"#);
        assert!(e.contains("field `at`") && e.contains("RFC 3339"), "{e}");
        assert!(!e.contains("yesterday"), "{e}");
        let e = why(br#"{"at": 0}"#);
        assert!(
            e.starts_with("column device: field `device` is missing or null"),
            "{e}"
        );
        assert!(why(b"not json").contains("not valid JSON"));
        assert!(why(br#"{"device": "a\u0000b", "at": 0}"#).contains("NUL"));
        let timestamp = |field| ColumnType::Timestamp.convert::<Postgres>(&field);
        assert!(timestamp(json!(i64::MAX)).is_err());
        assert_eq!(
            timestamp(json!(-1)),
            Ok(Value::Timestamp(
                OffsetDateTime::UNIX_EPOCH - time::Duration::milliseconds(1)
            ))
        );
    }

    #[test]
    fn parameters_are_binary_arrays_with_nulls() {
        let t = Table::new(
            &["t"],
            vec![column("n", "n", ColumnType::Int, true)],
            vec![],
        );
        let rows = [vec![Cell(Some(Value::Int(7)))], vec![Cell(None)]];
        let params = t.params(&rows.iter().collect::<Vec<_>>()).unwrap();
        // ndim 1, has-null 1, element oid 23, length 2, lower bound 1,
        // then 7 (4 bytes) and a NULL (length -1).
        let expected: Vec<u8> = [1i32, 1, 23, 2, 1, 4, 7, -1]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        assert_eq!(params[0].to_vec(), expected);
    }

    #[test]
    fn keys_tell_rows_of_the_same_key_apart() {
        let t = table();
        let row = |device: &str, offset| {
            vec![
                Cell(Some(Value::Text(device.into()))),
                Cell(None),
                Cell(Some(Value::Timestamp(OffsetDateTime::UNIX_EPOCH))),
                Cell(Some(Value::Bigint(offset))),
            ]
        };
        assert_eq!(t.key_of(&row("a", 1)), t.key_of(&row("a", 1)));
        assert_ne!(t.key_of(&row("a", 1)), t.key_of(&row("a", 2)));
        // Length prefixes keep ("ab", ...) and ("a", "b"...) apart.
        assert_ne!(t.key_of(&row("ab", 1)), t.key_of(&row("a", 1)));
    }
}
