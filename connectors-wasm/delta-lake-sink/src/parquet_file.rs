//! One Parquet file from converted rows, with the statistics Delta's `add`
//! action carries.
//!
//! Written with the `parquet` crate's own column writers, not through
//! `arrow`: the rows are already typed values, so Arrow arrays would only be
//! an extra copy, and `parquet`'s `arrow` feature brings arrow-array,
//! arrow-cast, arrow-ipc, arrow-select and their dependencies into the
//! component. Snappy compression (pure Rust), as Delta writers default to.

use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as Physical};
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DoubleType, FloatType, Int32Type, Int64Type,
};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::types::Type;
use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use crate::schema::{DataType, Value};

/// A column of the data file.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
}

/// The Parquet schema of `columns`.
fn parquet_schema(columns: &[Column]) -> parquet::errors::Result<Type> {
    let mut fields = Vec::new();
    for c in columns {
        let (physical, logical) = match c.data_type {
            DataType::Utf8 => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
            DataType::Binary => (Physical::BYTE_ARRAY, None),
            DataType::Int8 => (Physical::INT32, Some(int(8))),
            DataType::Int16 | DataType::UInt8 => (Physical::INT32, Some(int(16))),
            DataType::Int32 | DataType::UInt16 => (Physical::INT32, None),
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => (Physical::INT64, None),
            DataType::Float32 => (Physical::FLOAT, None),
            DataType::Float64 => (Physical::DOUBLE, None),
            DataType::Boolean => (Physical::BOOLEAN, None),
            DataType::Timestamp => (
                Physical::INT64,
                Some(LogicalType::Timestamp {
                    is_adjusted_to_u_t_c: true,
                    unit: TimeUnit::MICROS,
                }),
            ),
            DataType::Date => (Physical::INT32, Some(LogicalType::Date)),
        };
        let repetition = if c.nullable {
            Repetition::OPTIONAL
        } else {
            Repetition::REQUIRED
        };
        fields.push(Arc::new(
            Type::primitive_type_builder(&c.name, physical)
                .with_repetition(repetition)
                .with_logical_type(logical)
                .build()?,
        ));
    }
    Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
}

fn int(bits: i8) -> LogicalType {
    LogicalType::Integer {
        bit_width: bits,
        is_signed: true,
    }
}

/// A written file: its bytes and Delta's `stats` JSON.
pub struct DataFile {
    pub bytes: Vec<u8>,
    pub stats: String,
}

/// Writes `rows` (one value or null per column, in column order; nulls
/// only in nullable columns) as one row group.
pub fn write(columns: &[Column], rows: &[Vec<Option<Value>>]) -> Result<DataFile, String> {
    write_inner(columns, rows).map_err(|e| format!("writing the Parquet file: {e}"))
}

fn write_inner(
    columns: &[Column],
    rows: &[Vec<Option<Value>>],
) -> parquet::errors::Result<DataFile> {
    let schema = Arc::new(parquet_schema(columns)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!(
                "danube-connect delta-lake-sink {}",
                env!("CARGO_PKG_VERSION")
            ))
            .build(),
    );
    let mut bytes = Vec::new();
    let mut null_count = Map::new();
    let mut min_values = Map::new();
    let mut max_values = Map::new();
    {
        let mut writer = SerializedFileWriter::new(&mut bytes, schema, props)?;
        let mut group = writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            let spec = &columns[index];
            let cells = rows.iter().map(|r| &r[index]);
            let defs: Vec<i16> = cells.clone().map(|v| v.is_some() as i16).collect();
            let defs = spec.nullable.then_some(defs.as_slice());
            let nulls = rows.iter().filter(|r| r[index].is_none()).count();
            null_count.insert(spec.name.clone(), json!(nulls));
            let present = cells.flatten();
            // Min and max for integer columns (exact, so readers may skip
            // files on them); none for dates and times.
            let with_stats = !matches!(spec.data_type, DataType::Date | DataType::Timestamp);
            match spec.data_type {
                DataType::Utf8 | DataType::Binary => {
                    write_column::<ByteArrayType>(&mut column, present, defs)?;
                }
                DataType::Boolean => {
                    write_column::<BoolType>(&mut column, present, defs)?;
                }
                DataType::Float32 => {
                    write_column::<FloatType>(&mut column, present, defs)?;
                }
                DataType::Float64 => {
                    write_column::<DoubleType>(&mut column, present, defs)?;
                }
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::UInt8
                | DataType::UInt16
                | DataType::Date => {
                    let values = write_column::<Int32Type>(&mut column, present, defs)?;
                    if with_stats {
                        int_stats(&spec.name, &values, &mut min_values, &mut max_values);
                    }
                }
                DataType::Int64 | DataType::UInt32 | DataType::UInt64 | DataType::Timestamp => {
                    let values = write_column::<Int64Type>(&mut column, present, defs)?;
                    if with_stats {
                        int_stats(&spec.name, &values, &mut min_values, &mut max_values);
                    }
                }
            }
            column.close()?;
            index += 1;
        }
        group.close()?;
        writer.close()?;
    }
    let stats = json!({
        "numRecords": rows.len(),
        "minValues": min_values,
        "maxValues": max_values,
        "nullCount": null_count,
    });
    Ok(DataFile {
        bytes,
        stats: stats.to_string(),
    })
}

/// A column's value taken out of its converted cell (the conversion made
/// each cell the type of its column).
trait FromCell {
    fn from_cell(value: &Value) -> Self;
}

fn mismatched(value: &Value) -> ! {
    unreachable!("{value:?} was converted for another column type")
}

impl FromCell for bool {
    fn from_cell(value: &Value) -> bool {
        matches!(value, Value::Bool(true))
    }
}

impl FromCell for i32 {
    fn from_cell(value: &Value) -> i32 {
        match value {
            Value::I32(i) => *i,
            other => mismatched(other),
        }
    }
}

impl FromCell for i64 {
    fn from_cell(value: &Value) -> i64 {
        match value {
            Value::I64(i) => *i,
            other => mismatched(other),
        }
    }
}

impl FromCell for f32 {
    fn from_cell(value: &Value) -> f32 {
        match value {
            Value::F32(f) => *f,
            other => mismatched(other),
        }
    }
}

impl FromCell for f64 {
    fn from_cell(value: &Value) -> f64 {
        match value {
            Value::F64(f) => *f,
            other => mismatched(other),
        }
    }
}

impl FromCell for ByteArray {
    fn from_cell(value: &Value) -> ByteArray {
        match value {
            Value::Bytes(b) => ByteArray::from(b.clone()),
            other => mismatched(other),
        }
    }
}

/// Writes a column's present values (`defs` places the nulls); returns
/// them, for statistics.
fn write_column<'v, T>(
    column: &mut SerializedColumnWriter<'_>,
    present: impl Iterator<Item = &'v Value>,
    defs: Option<&[i16]>,
) -> parquet::errors::Result<Vec<T::T>>
where
    T: parquet::data_type::DataType,
    T::T: FromCell,
{
    let values: Vec<T::T> = present.map(T::T::from_cell).collect();
    column.typed::<T>().write_batch(&values, defs, None)?;
    Ok(values)
}

/// Records the least and greatest of an integer column's values.
fn int_stats<T: Ord + Serialize>(
    name: &str,
    values: &[T],
    min: &mut Map<String, Json>,
    max: &mut Map<String, Json>,
) {
    if let (Some(lo), Some(hi)) = (values.iter().min(), values.iter().max()) {
        min.insert(name.to_string(), json!(lo));
        max.insert(name.to_string(), json!(hi));
    }
}

/// `true` for a JSON value that fills a cell with null.
pub fn is_null(value: Option<&Json>) -> bool {
    matches!(value, None | Some(Json::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, data_type: DataType) -> Column {
        Column {
            name: name.into(),
            data_type,
            nullable: true,
        }
    }

    /// Integer columns get exact min and max; dates, times and other types
    /// none; every column its null count.
    #[test]
    fn statistics_cover_integer_columns_and_count_nulls() {
        let columns = [
            column("small", DataType::Int32),
            column("big", DataType::Int64),
            column("day", DataType::Date),
            column("at", DataType::Timestamp),
            column("name", DataType::Utf8),
        ];
        let rows = vec![
            vec![
                Some(Value::I32(3)),
                Some(Value::I64(-7_000_000_000)),
                Some(Value::I32(19_000)),
                Some(Value::I64(1)),
                Some(Value::Bytes(b"a".to_vec())),
            ],
            vec![
                None,
                Some(Value::I64(9)),
                Some(Value::I32(20_000)),
                None,
                None,
            ],
            vec![
                Some(Value::I32(-1)),
                None,
                None,
                Some(Value::I64(2)),
                Some(Value::Bytes(b"b".to_vec())),
            ],
        ];
        let file = write(&columns, &rows).unwrap();
        let stats: Json = serde_json::from_str(&file.stats).unwrap();
        assert_eq!(stats["numRecords"], json!(3));
        assert_eq!(
            stats["minValues"],
            json!({"small": -1, "big": -7_000_000_000i64})
        );
        assert_eq!(stats["maxValues"], json!({"small": 3, "big": 9}));
        assert_eq!(
            stats["nullCount"],
            json!({"small": 1, "big": 1, "day": 1, "at": 1, "name": 1})
        );
        assert_eq!(&file.bytes[..4], b"PAR1");
    }
}
