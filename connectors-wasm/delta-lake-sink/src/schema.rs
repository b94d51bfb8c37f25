//! Column types: upstream's Arrow type names, what each is in a Delta schema
//! and in Parquet, and a JSON value converted to one (or refused, naming the
//! column and the type, never quoting the value).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A column's type, by upstream's Arrow names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
pub enum DataType {
    Utf8,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Boolean,
    Timestamp,
    Date,
    Binary,
}

/// One converted, non-null value, in its Parquet physical form.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bytes(Vec<u8>),
}

impl DataType {
    /// The Delta primitive type name (the table's `schemaString`). Delta
    /// has no unsigned integers: each goes to the next wider signed type,
    /// and UInt64 to `long`, values above i64::MAX refused.
    pub fn delta_name(self) -> &'static str {
        match self {
            DataType::Utf8 => "string",
            DataType::Int8 => "byte",
            DataType::Int16 | DataType::UInt8 => "short",
            DataType::Int32 | DataType::UInt16 => "integer",
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "long",
            DataType::Float32 => "float",
            DataType::Float64 => "double",
            DataType::Boolean => "boolean",
            DataType::Timestamp => "timestamp",
            DataType::Date => "date",
            DataType::Binary => "binary",
        }
    }

    /// Whether a table can be partitioned by a column of this type.
    pub fn can_partition(self) -> bool {
        !matches!(
            self,
            DataType::Float32 | DataType::Float64 | DataType::Timestamp | DataType::Binary
        )
    }

    /// What a record must hold, for errors.
    fn wanted(self) -> &'static str {
        match self {
            DataType::Utf8 => "a string",
            DataType::Int8 => "an integer in -128..=127",
            DataType::Int16 => "an integer in -32768..=32767",
            DataType::Int32 => "a 32-bit integer",
            DataType::Int64 => "a 64-bit integer",
            DataType::UInt8 => "an integer in 0..=255",
            DataType::UInt16 => "an integer in 0..=65535",
            DataType::UInt32 => "an integer in 0..=4294967295",
            DataType::UInt64 => "an integer in 0..=9223372036854775807",
            DataType::Float32 | DataType::Float64 => "a number",
            DataType::Boolean => "true or false",
            DataType::Timestamp => {
                "an RFC 3339 string (2024-05-01T12:00:00Z) or an integer of microseconds since 1970"
            }
            DataType::Date => "a date string YYYY-MM-DD",
            DataType::Binary => "a string (its UTF-8 bytes are stored)",
        }
    }

    /// Converts a non-null JSON value, or says what the column wanted.
    pub fn convert(self, column: &str, value: &Json) -> Result<Value, String> {
        let int_in =
            |lo: i64, hi: i64| -> Option<i64> { value.as_i64().filter(|v| (lo..=hi).contains(v)) };
        let converted = match self {
            DataType::Utf8 => value.as_str().map(|s| Value::Bytes(s.as_bytes().to_vec())),
            DataType::Binary => value.as_str().map(|s| Value::Bytes(s.as_bytes().to_vec())),
            DataType::Int8 => int_in(i8::MIN.into(), i8::MAX.into()).map(|v| Value::I32(v as i32)),
            DataType::Int16 => {
                int_in(i16::MIN.into(), i16::MAX.into()).map(|v| Value::I32(v as i32))
            }
            DataType::Int32 => {
                int_in(i32::MIN.into(), i32::MAX.into()).map(|v| Value::I32(v as i32))
            }
            DataType::Int64 => value.as_i64().map(Value::I64),
            DataType::UInt8 => int_in(0, u8::MAX.into()).map(|v| Value::I32(v as i32)),
            DataType::UInt16 => int_in(0, u16::MAX.into()).map(|v| Value::I32(v as i32)),
            DataType::UInt32 => int_in(0, u32::MAX.into()).map(Value::I64),
            DataType::UInt64 => int_in(0, i64::MAX).map(Value::I64),
            DataType::Float32 => value
                .as_f64()
                .filter(|v| v.is_nan() || v.abs() <= f32::MAX as f64)
                .map(|v| Value::F32(v as f32)),
            DataType::Float64 => value.as_f64().map(Value::F64),
            DataType::Boolean => value.as_bool().map(Value::Bool),
            DataType::Timestamp => match value {
                Json::String(s) => OffsetDateTime::parse(s, &Rfc3339).ok().and_then(|t| {
                    i64::try_from(t.unix_timestamp_nanos() / 1000)
                        .ok()
                        .map(Value::I64)
                }),
                Json::Number(_) => value.as_i64().map(Value::I64),
                _ => None,
            },
            DataType::Date => value.as_str().and_then(parse_date).map(Value::I32),
        };
        converted.ok_or_else(|| {
            format!(
                "column `{}` wants {}, the record has {}",
                crate::config::shown(column),
                self.wanted(),
                json_kind(value)
            )
        })
    }
}

impl DataType {
    /// A converted value as JSON that `convert` turns back into it (rows
    /// staged between batches).
    pub fn to_json(self, value: &Value) -> Json {
        match (self, value) {
            (DataType::Date, Value::I32(days)) => Json::String(format_date(*days)),
            (_, Value::Bool(b)) => Json::Bool(*b),
            (_, Value::I32(i)) => Json::from(*i),
            (_, Value::I64(i)) => Json::from(*i),
            (_, Value::F32(f)) => Json::from(*f as f64),
            (_, Value::F64(f)) => Json::from(*f),
            // Utf8 and Binary values are made from JSON strings.
            (_, Value::Bytes(b)) => Json::String(String::from_utf8_lossy(b).into_owned()),
        }
    }
}

/// Days since 1970-01-01 of `YYYY-MM-DD`.
fn parse_date(s: &str) -> Option<i32> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, &format).ok()?;
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).ok()?;
    i32::try_from((date - epoch).whole_days()).ok()
}

/// A date's `YYYY-MM-DD` from days since 1970 (partition values).
pub fn format_date(days: i32) -> String {
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1).unwrap();
    match epoch.checked_add(time::Duration::days(days.into())) {
        Some(d) => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        None => days.to_string(),
    }
}

/// What kind of JSON a value is, for errors (never the value itself).
pub fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a fractional number",
        Json::Number(_) => "an integer out of range",
        Json::String(_) => "a string of another form",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// The value at a dot-separated path, `None` if a step is missing.
pub fn at_path<'a>(payload: &'a Json, path: &[String]) -> Option<&'a Json> {
    path.iter()
        .try_fold(payload, |v, step| v.get(step.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What staging writes (`to_json`) converts back to the same value,
    /// for every type.
    #[test]
    fn staged_values_convert_back_to_themselves() {
        let cases = [
            (DataType::Utf8, json!("héllo")),
            (DataType::Binary, json!("bytes")),
            (DataType::Int8, json!(-128)),
            (DataType::Int16, json!(32767)),
            (DataType::Int32, json!(-7)),
            (DataType::Int64, json!(i64::MIN)),
            (DataType::UInt8, json!(255)),
            (DataType::UInt16, json!(65535)),
            (DataType::UInt32, json!(u32::MAX)),
            (DataType::UInt64, json!(i64::MAX)),
            (DataType::Float32, json!(0.1)),
            (DataType::Float64, json!(1e300)),
            (DataType::Boolean, json!(true)),
            (DataType::Timestamp, json!("2024-05-01T12:00:00.123456Z")),
            (DataType::Date, json!("2024-02-29")),
        ];
        for (data_type, input) in cases {
            let value = data_type.convert("c", &input).unwrap();
            let staged = data_type.to_json(&value);
            assert_eq!(data_type.convert("c", &staged), Ok(value), "{data_type:?}");
        }
    }

    #[test]
    fn values_convert_or_name_what_was_wanted() {
        assert_eq!(DataType::Int32.convert("a", &json!(7)), Ok(Value::I32(7)));
        let e = DataType::Int8.convert("a", &json!(300)).unwrap_err();
        assert!(
            e.contains("column `a` wants an integer in -128..=127"),
            "{e}"
        );
        let e = DataType::Utf8
            .convert("name", &json!({"secret": 1}))
            .unwrap_err();
        assert!(e.contains("an object") && !e.contains("secret"), "{e}");
        assert_eq!(
            DataType::Timestamp.convert("t", &json!("1970-01-01T00:00:01.5+00:00")),
            Ok(Value::I64(1_500_000))
        );
        assert_eq!(
            DataType::Timestamp.convert("t", &json!("1970-01-01T01:00:00+01:00")),
            Ok(Value::I64(0))
        );
        assert_eq!(
            DataType::Date.convert("d", &json!("1970-01-11")),
            Ok(Value::I32(10))
        );
        assert_eq!(format_date(10), "1970-01-11");
        assert!(DataType::UInt64.convert("u", &json!(u64::MAX)).is_err());
        assert!(DataType::Boolean.convert("b", &json!("true")).is_err());
    }
}
