//! Delta tables read back with the `deltalake` Python package (delta-rs),
//! from the virtual environment `scripts/setup.sh` makes in
//! `<target>/delta-tools`; and the same rows written by
//! `deltalake.write_deltalake`, for the benchmark's comparison.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::target_dir;

/// The virtual environment's Python; panics naming `scripts/setup.sh` if
/// it is missing.
pub fn python() -> PathBuf {
    let python = target_dir().join("delta-tools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs deltalake and moto into \
         <target>/delta-tools)",
        python.display()
    );
    python
}

/// Runs `script` with `args` in the virtual environment; its standard output
/// parsed as JSON. Panics with its standard error if it fails.
pub fn run_python(script: &str, args: &[&str]) -> Value {
    try_python(script, args).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_python`], the failure as an error.
pub fn try_python(script: &str, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "python failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "python printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

const READ: &str = r#"
import json, os, sys
from deltalake import DeltaTable
uri, opts, cols = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
dt = DeltaTable(uri, storage_options=opts or None)
t = dt.to_pyarrow_table()
print(json.dumps({
    "version": dt.version(),
    "rows": t.num_rows,
    "schema": {f.name: str(f.type) for f in t.schema},
    "partition_columns": dt.metadata().partition_columns,
    "history": [{"operation": h.get("operation"), "version": h.get("version")}
                for h in dt.history()],
    "files": len(dt.file_uris()),
    "columns": {c: t.column(c).to_pylist() for c in cols},
}, default=str))
sys.stdout.flush()
os._exit(0)  # past pyarrow's teardown, which aborted now and then under load
"#;

/// What delta-rs reads of a table.
#[derive(Debug)]
pub struct TableRead {
    pub version: u64,
    pub rows: u64,
    /// Column name to its Arrow type as pyarrow prints it (`int64`,
    /// `string`, `timestamp[us, tz=UTC]`).
    pub schema: serde_json::Map<String, Value>,
    pub partition_columns: Vec<String>,
    /// `(operation, version)`, newest first.
    pub history: Vec<(String, u64)>,
    pub files: u64,
    /// The asked columns' values, in table order.
    pub columns: serde_json::Map<String, Value>,
}

/// Reads the table at `uri` (a directory or `s3://...`) with delta-rs.
pub fn read_table(uri: &str, storage_options: &Value, columns: &[&str]) -> TableRead {
    let v = run_python(
        READ,
        &[
            uri,
            &storage_options.to_string(),
            &serde_json::to_string(columns).unwrap(),
        ],
    );
    TableRead {
        version: v["version"].as_u64().unwrap(),
        rows: v["rows"].as_u64().unwrap(),
        schema: v["schema"].as_object().unwrap().clone(),
        partition_columns: serde_json::from_value(v["partition_columns"].clone()).unwrap(),
        history: v["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["operation"].as_str().unwrap_or("").to_string(),
                    h["version"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
        files: v["files"].as_u64().unwrap(),
        columns: v["columns"].as_object().unwrap().clone(),
    }
}

/// How many rows the table has, `None` while it has no log (or the read
/// failed: this is for polling while the table is written).
pub fn row_count(uri: &str, storage_options: &Value) -> Option<u64> {
    let v = try_python(
        r#"
import json, os, sys
from deltalake import DeltaTable
try:
    dt = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2]) or None)
    print(dt.to_pyarrow_table().num_rows)
except Exception:
    print("null")
sys.stdout.flush()
os._exit(0)
"#,
        &[uri, &storage_options.to_string()],
    );
    v.ok()?.as_u64()
}
