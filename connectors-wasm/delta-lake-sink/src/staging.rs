//! Rows staged across batches, so that a data file holds many batches.
//!
//! Reliable topics let about ten unacknowledged messages out per
//! subscription, so a sink's batches are small, and a file per batch makes
//! thousands of tiny files. A route therefore writes each batch's rows as
//! one object under `_danube_staging/<subscription>/` in the table's own
//! storage (local writes are synced) and keeps them in memory; only then is
//! the batch reported written, and acknowledged. Once the staged rows reach
//! `target_file_rows` or `target_file_bytes`, or the oldest has waited
//! `flush_interval_ms`, they are committed like any batch (one file per
//! partition value, `txn` versions), and the staged objects removed.
//!
//! Exactly once still rests on the `txn` versions:
//! - a crash before the commit: the next instance lists the staged objects
//!   and commits their rows;
//! - a crash after it, before the removal: those rows are at or below
//!   their `txn` versions, and are dropped;
//! - a batch staged twice (its acknowledgement was lost): rows are made
//!   unique by (application id, offset) before the commit;
//! - objects an earlier consumer of the subscription staged (a failover):
//!   every commit lists the directory first and takes them too.
//!
//! In the table's storage the rows are as durable as the table (no local
//! disk to lose with a pod). Readers never see them: they read the log, and
//! `VACUUM` leaves directories whose names start with `_` alone.

use std::time::{Duration, Instant};

use danube_connect_sdk::ConnectorError;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::Row;
use crate::config::shown;
use crate::delta_log::escape_partition_value;
use crate::parquet_file::Column;
use crate::schema::DataType;
use crate::store::Store;

/// When staged rows are written to the table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub rows: u64,
    pub bytes: u64,
    /// Zero: nothing is staged.
    pub interval: Duration,
}

/// The columns rows are staged with: a staged object names them, so rows
/// staged under another mapping are read by column name.
pub struct Layout<'a> {
    pub columns: &'a [Column],
    pub partition_columns: &'a [String],
}

/// The first line of a staged object.
#[derive(Serialize, Deserialize)]
struct Header {
    columns: Vec<StagedColumn>,
    partition_columns: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct StagedColumn {
    name: String,
    data_type: DataType,
}

/// Every other line: one row.
#[derive(Serialize, Deserialize)]
struct StagedRow {
    app_id: String,
    offset: u64,
    partition: Vec<Option<String>>,
    cells: Vec<Json>,
}

/// A route's staged rows.
pub struct Staging {
    /// `_danube_staging/<subscription>`.
    dir: String,
    limits: Limits,
    /// The staged objects this instance knows, with their rows.
    objects: Vec<(String, Vec<Row>)>,
    rows: u64,
    bytes: u64,
    /// When the oldest row still staged was staged.
    oldest: Option<Instant>,
    /// Whether the directory was listed since the start (objects left by a
    /// crash are committed at the first chance, staging or not).
    listed: bool,
}

impl Staging {
    pub fn new(subscription: &str, limits: Limits) -> Staging {
        // Subscription names are free text: one path segment, never `..`.
        let name = escape_partition_value(subscription).replace('.', "%2E");
        Staging {
            dir: format!("_danube_staging/{name}"),
            limits,
            objects: Vec::new(),
            rows: 0,
            bytes: 0,
            oldest: None,
            listed: false,
        }
    }

    /// Whether batches are staged (or committed as they come).
    pub fn enabled(&self) -> bool {
        !self.limits.interval.is_zero()
    }

    /// Whether the directory was listed since the start.
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// Rows staged and not yet committed, as far as this instance knows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes `rows` as one staged object, then keeps them.
    pub fn stage(
        &mut self,
        store: &Store,
        layout: &Layout,
        rows: Vec<Row>,
    ) -> Result<(), ConnectorError> {
        let header = Header {
            columns: layout
                .columns
                .iter()
                .map(|c| StagedColumn {
                    name: c.name.clone(),
                    data_type: c.data_type,
                })
                .collect(),
            partition_columns: layout.partition_columns.to_vec(),
        };
        let mut text = json_line(&header)?;
        for row in &rows {
            let cells = row
                .cells
                .iter()
                .zip(layout.columns)
                .map(|(cell, c)| cell.as_ref().map_or(Json::Null, |v| c.data_type.to_json(v)))
                .collect();
            text.push_str(&json_line(&StagedRow {
                app_id: row.app_id.clone(),
                offset: row.offset,
                partition: row.partition.clone(),
                cells,
            })?);
        }
        // Named by time first, so a listing reads them in staging order.
        let path = format!(
            "{}/{:016}-{}.ndjson",
            self.dir,
            crate::now_ms(),
            uuid::Uuid::new_v4().simple()
        );
        store.make_dirs(&path)?;
        store.put(&path, text.as_bytes())?;
        self.rows += rows.len() as u64;
        self.bytes += text.len() as u64;
        self.oldest.get_or_insert_with(Instant::now);
        self.objects.push((path, rows));
        Ok(())
    }

    /// Whether the staged rows are to be committed now: enough of them, an
    /// old one, or objects left from before this instance not looked at.
    pub fn due(&self) -> bool {
        !self.listed
            || self.rows >= self.limits.rows
            || self.bytes >= self.limits.bytes
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= self.limits.interval)
    }

    /// Every staged row, this instance's and those of objects it did not
    /// stage (read now), unique by (application id, offset), with the
    /// objects that hold them. The rows leave memory: if their commit
    /// fails, the next takes them from storage again.
    pub fn take(
        &mut self,
        store: &Store,
        layout: &Layout,
    ) -> Result<(Vec<Row>, Vec<String>), ConnectorError> {
        let listed = store.list(&self.dir)?;
        self.listed = true;
        let mut known = std::mem::take(&mut self.objects);
        let mut rows = Vec::new();
        let mut paths = Vec::new();
        for path in listed {
            match known.iter().position(|(p, _)| *p == path) {
                Some(i) => rows.append(&mut known.swap_remove(i).1),
                None => {
                    let Some(bytes) = store.get(&path)? else {
                        continue;
                    };
                    rows.extend(read(&bytes, layout).map_err(|why| {
                        ConnectorError::fatal(format!(
                            "staged rows {} in {}: {why}; their records were acknowledged and \
                             are not in the table: restore the route's mapping, or move the \
                             object away and write its rows yourself",
                            shown(&path),
                            store.shown()
                        ))
                    })?);
                }
            }
            paths.push(path);
        }
        rows.sort_by(|a, b| (&a.app_id, a.offset).cmp(&(&b.app_id, b.offset)));
        rows.dedup_by(|a, b| a.app_id == b.app_id && a.offset == b.offset);
        Ok((rows, paths))
    }

    /// The rows of `paths` are in the table: their objects go.
    pub fn committed(&mut self, store: &Store, paths: &[String]) {
        self.rows = 0;
        self.bytes = 0;
        self.oldest = None;
        for path in paths {
            // One left behind is read again and dropped by its `txn`
            // versions at the next commit.
            if let Err(e) = store.delete(path) {
                danube_connect_sdk::warn!("staged rows {path} stay: {}", e.message());
            }
        }
    }
}

fn json_line(value: &impl Serialize) -> Result<String, ConnectorError> {
    let mut line = serde_json::to_string(value)
        .map_err(|e| ConnectorError::fatal(format!("encoding staged rows: {e}")))?;
    line.push('\n');
    Ok(line)
}

/// The rows of a staged object, in `layout`'s columns: a column the object
/// lacks is null, a column it has is converted to the type the route maps
/// now; what cannot be is refused.
fn read(bytes: &[u8], layout: &Layout) -> Result<Vec<Row>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut lines = text.lines();
    let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|e| format!("not staged rows ({e})"))?;
    if header.partition_columns != layout.partition_columns {
        return Err(format!(
            "staged with partition columns {:?}, the route has {:?}",
            header.partition_columns, layout.partition_columns
        ));
    }
    let sources: Vec<Option<usize>> = layout
        .columns
        .iter()
        .map(|c| header.columns.iter().position(|h| h.name == c.name))
        .collect();
    let mut rows = Vec::new();
    for (n, line) in lines.enumerate() {
        let staged: StagedRow = serde_json::from_str(line).map_err(|e| format!("row {n}: {e}"))?;
        let mut cells = Vec::with_capacity(layout.columns.len());
        for (c, source) in layout.columns.iter().zip(&sources) {
            let value = source
                .and_then(|i| staged.cells.get(i))
                .unwrap_or(&Json::Null);
            cells.push(match value {
                Json::Null if c.nullable => None,
                Json::Null => return Err(format!("row {n} has no value for `{}`", c.name)),
                value => Some(c.data_type.convert(&c.name, value)?),
            });
        }
        rows.push(Row {
            index: 0,
            app_id: staged.app_id,
            offset: staged.offset,
            partition: staged.partition,
            cells,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Value;

    fn column(name: &str, data_type: DataType, nullable: bool) -> Column {
        Column {
            name: name.into(),
            data_type,
            nullable,
        }
    }

    /// Rows staged under one mapping are read under another by column
    /// name: a column added since is null if it may be, refused if not.
    #[test]
    fn staged_rows_are_read_by_column_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Local(dir.path().to_path_buf());
        let limits = Limits {
            rows: 10,
            bytes: 1 << 20,
            interval: Duration::from_secs(60),
        };
        let mut staging = Staging::new("sub/x", limits);
        let before = [
            column("id", DataType::Int64, false),
            column("d", DataType::Date, true),
        ];
        let partition_columns = ["currency".to_string()];
        let row = Row {
            index: 0,
            app_id: "a".into(),
            offset: 4,
            partition: vec![Some("EUR".into())],
            cells: vec![Some(Value::I64(7)), Some(Value::I32(19000))],
        };
        let layout = Layout {
            columns: &before,
            partition_columns: &partition_columns,
        };
        staging.stage(&store, &layout, vec![row]).unwrap();
        assert_eq!(staging.dir, "_danube_staging/sub%2Fx");
        let path = store.list(&staging.dir).unwrap().remove(0);
        let bytes = store.get(&path).unwrap().unwrap();

        let after = [
            column("d", DataType::Date, true),
            column("id", DataType::Int64, false),
            column("note", DataType::Utf8, true),
        ];
        let layout = Layout {
            columns: &after,
            partition_columns: &partition_columns,
        };
        let rows = read(&bytes, &layout).unwrap();
        assert_eq!(
            rows[0].cells,
            [Some(Value::I32(19000)), Some(Value::I64(7)), None]
        );
        assert_eq!(
            (rows[0].offset, rows[0].partition.clone()),
            (4, vec![Some("EUR".into())])
        );

        let strict = [
            column("id", DataType::Int64, false),
            column("n", DataType::Int32, false),
        ];
        let layout = Layout {
            columns: &strict,
            partition_columns: &partition_columns,
        };
        let e = read(&bytes, &layout).err().unwrap();
        assert!(e.contains("no value for `n`"), "{e}");
    }
}
