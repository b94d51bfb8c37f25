//! Delta checkpoints: the table's state at a version (protocol, metaData,
//! the `txn` of each application and every live `add`) in one Parquet file,
//! `_delta_log/<version>.checkpoint.parquet`, and `_delta_log/_last_checkpoint`
//! naming it, so that readers start there instead of replaying every JSON
//! entry. The file has the classic single-part layout: one nullable struct
//! column per action kind, one action per row.
//!
//! Written with the `parquet` crate's column writers like the data files:
//! each leaf column gets its definition and repetition levels from the
//! action's JSON, walked along the leaf's path.

use std::sync::Arc;

use parquet::data_type::{BoolType, ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde_json::Value as Json;

const SCHEMA: &str = "message spark_schema {
  optional group txn {
    optional binary appId (STRING);
    optional int64 version;
    optional int64 lastUpdated;
  }
  optional group add {
    optional binary path (STRING);
    optional group partitionValues (MAP) {
      repeated group key_value {
        required binary key (STRING);
        optional binary value (STRING);
      }
    }
    optional int64 size;
    optional int64 modificationTime;
    optional boolean dataChange;
    optional binary stats (STRING);
  }
  optional group remove {
    optional binary path (STRING);
    optional int64 deletionTimestamp;
    optional boolean dataChange;
  }
  optional group metaData {
    optional binary id (STRING);
    optional binary name (STRING);
    optional binary description (STRING);
    optional group format {
      optional binary provider (STRING);
      optional group options (MAP) {
        repeated group key_value {
          required binary key (STRING);
          optional binary value (STRING);
        }
      }
    }
    optional binary schemaString (STRING);
    optional group partitionColumns (LIST) {
      repeated group list {
        optional binary element (STRING);
      }
    }
    optional group configuration (MAP) {
      repeated group key_value {
        required binary key (STRING);
        optional binary value (STRING);
      }
    }
    optional int64 createdTime;
  }
  optional group protocol {
    optional int32 minReaderVersion;
    optional int32 minWriterVersion;
  }
}";

/// A step from a row's action object to a leaf value.
#[derive(Clone, Copy)]
enum Step {
    /// An optional struct field.
    Field(&'static str),
    /// The keys of an optional map field (last step).
    MapKeys(&'static str),
    /// The values of an optional map field (last step).
    MapValues(&'static str),
    /// The elements of an optional list field (last step).
    ListElements(&'static str),
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    I64,
    I32,
    Bool,
}

use Step::*;

/// The leaf columns, in the schema's order.
const LEAVES: &[(&[Step], Kind)] = &[
    (&[Field("txn"), Field("appId")], Kind::Str),
    (&[Field("txn"), Field("version")], Kind::I64),
    (&[Field("txn"), Field("lastUpdated")], Kind::I64),
    (&[Field("add"), Field("path")], Kind::Str),
    (&[Field("add"), MapKeys("partitionValues")], Kind::Str),
    (&[Field("add"), MapValues("partitionValues")], Kind::Str),
    (&[Field("add"), Field("size")], Kind::I64),
    (&[Field("add"), Field("modificationTime")], Kind::I64),
    (&[Field("add"), Field("dataChange")], Kind::Bool),
    (&[Field("add"), Field("stats")], Kind::Str),
    (&[Field("remove"), Field("path")], Kind::Str),
    (&[Field("remove"), Field("deletionTimestamp")], Kind::I64),
    (&[Field("remove"), Field("dataChange")], Kind::Bool),
    (&[Field("metaData"), Field("id")], Kind::Str),
    (&[Field("metaData"), Field("name")], Kind::Str),
    (&[Field("metaData"), Field("description")], Kind::Str),
    (
        &[Field("metaData"), Field("format"), Field("provider")],
        Kind::Str,
    ),
    (
        &[Field("metaData"), Field("format"), MapKeys("options")],
        Kind::Str,
    ),
    (
        &[Field("metaData"), Field("format"), MapValues("options")],
        Kind::Str,
    ),
    (&[Field("metaData"), Field("schemaString")], Kind::Str),
    (
        &[Field("metaData"), ListElements("partitionColumns")],
        Kind::Str,
    ),
    (&[Field("metaData"), MapKeys("configuration")], Kind::Str),
    (&[Field("metaData"), MapValues("configuration")], Kind::Str),
    (&[Field("metaData"), Field("createdTime")], Kind::I64),
    (&[Field("protocol"), Field("minReaderVersion")], Kind::I32),
    (&[Field("protocol"), Field("minWriterVersion")], Kind::I32),
];

/// One leaf entry: the value (present only at the maximum definition
/// level), its definition and repetition levels.
type Entry = (Option<Json>, i16, i16);

/// The entries of one row's action object for the leaf at `steps`.
fn entries(action: &Json, steps: &[Step], out: &mut Vec<Entry>) {
    let mut current = action;
    let mut def = 0;
    for step in steps {
        match *step {
            Field(name) => match current.get(name) {
                Some(v) if !v.is_null() => {
                    current = v;
                    def += 1;
                }
                _ => return out.push((None, def, 0)),
            },
            MapKeys(name) | MapValues(name) => {
                let Some(map) = current.get(name).and_then(Json::as_object) else {
                    return out.push((None, def, 0));
                };
                def += 1;
                if map.is_empty() {
                    return out.push((None, def, 0));
                }
                for (i, (key, value)) in map.iter().enumerate() {
                    let rep = i16::from(i > 0);
                    match step {
                        MapKeys(_) => out.push((Some(Json::String(key.clone())), def + 1, rep)),
                        _ if value.is_null() => out.push((None, def + 1, rep)),
                        _ => out.push((Some(value.clone()), def + 2, rep)),
                    }
                }
                return;
            }
            ListElements(name) => {
                let Some(list) = current.get(name).and_then(Json::as_array) else {
                    return out.push((None, def, 0));
                };
                def += 1;
                if list.is_empty() {
                    return out.push((None, def, 0));
                }
                for (i, value) in list.iter().enumerate() {
                    let rep = i16::from(i > 0);
                    match value {
                        Json::Null => out.push((None, def + 1, rep)),
                        v => out.push((Some(v.clone()), def + 2, rep)),
                    }
                }
                return;
            }
        }
    }
    out.push((Some(current.clone()), def, 0));
}

/// The checkpoint file of `actions` (each `{"add": {...}}`, `{"txn": ...}`,
/// ...).
pub fn write(actions: &[Json]) -> Result<Vec<u8>, String> {
    write_inner(actions).map_err(|e| format!("writing the checkpoint: {e}"))
}

fn write_inner(actions: &[Json]) -> parquet::errors::Result<Vec<u8>> {
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let mut bytes = Vec::new();
    {
        let mut writer = SerializedFileWriter::new(&mut bytes, schema, props)?;
        let mut group = writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            let (steps, kind) = LEAVES[index];
            let mut all = Vec::new();
            for action in actions {
                entries(action, steps, &mut all);
            }
            let repeated = steps.iter().any(|s| !matches!(s, Field(_)));
            let defs: Vec<i16> = all.iter().map(|e| e.1).collect();
            let reps: Vec<i16> = all.iter().map(|e| e.2).collect();
            let reps = repeated.then_some(reps.as_slice());
            let present = all.iter().filter_map(|e| e.0.as_ref());
            match kind {
                Kind::Str => {
                    let values: Vec<ByteArray> = present
                        .map(|v| match v {
                            Json::String(s) => ByteArray::from(s.as_bytes().to_vec()),
                            other => ByteArray::from(other.to_string().into_bytes()),
                        })
                        .collect();
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&values, Some(&defs), reps)?;
                }
                Kind::I64 => {
                    let values: Vec<i64> = present.map(|v| v.as_i64().unwrap_or(0)).collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&values, Some(&defs), reps)?;
                }
                Kind::I32 => {
                    let values: Vec<i32> =
                        present.map(|v| v.as_i64().unwrap_or(0) as i32).collect();
                    column
                        .typed::<Int32Type>()
                        .write_batch(&values, Some(&defs), reps)?;
                }
                Kind::Bool => {
                    let values: Vec<bool> = present.map(|v| v.as_bool().unwrap_or(false)).collect();
                    column
                        .typed::<BoolType>()
                        .write_batch(&values, Some(&defs), reps)?;
                }
            }
            column.close()?;
            index += 1;
        }
        group.close()?;
        writer.close()?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn map_and_list_leaves_get_their_levels() {
        let mut out = Vec::new();
        let add = json!({"add": {"path": "a", "partitionValues": {"p": "x", "q": null}}});
        entries(&add, &[Field("add"), MapKeys("partitionValues")], &mut out);
        assert_eq!(out, [(Some(json!("p")), 3, 0), (Some(json!("q")), 3, 1)]);
        out.clear();
        entries(
            &add,
            &[Field("add"), MapValues("partitionValues")],
            &mut out,
        );
        assert_eq!(out, [(Some(json!("x")), 4, 0), (None, 3, 1)]);
        out.clear();
        entries(
            &json!({"txn": {}}),
            &[Field("add"), Field("path")],
            &mut out,
        );
        assert_eq!(out, [(None, 0, 0)]);
        out.clear();
        let meta = json!({"metaData": {"partitionColumns": []}});
        entries(
            &meta,
            &[Field("metaData"), ListElements("partitionColumns")],
            &mut out,
        );
        assert_eq!(out, [(None, 2, 0)]);
        assert!(write(&[add, meta]).is_ok());
    }
}
