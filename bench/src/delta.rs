//! Scenario: Delta Lake. Datagen records (1 KiB JSON) fed to a topic,
//! written by delta-lake-sink into a local Delta table (batches staged,
//! then one Parquet file and one commit per `target_file_rows`); beside the
//! same rows written by delta-rs's `deltalake.write_deltalake` from Python
//! in the same run, once in batches of the size the sink's commits had and
//! once in one call. The Python side
//! needs the virtual environment `scripts/setup.sh` makes in
//! `target/delta-tools`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Env;
use crate::feed::Feeder;
use crate::host::HostProcess;
use crate::report::{Table, ratio};

const SIZE: usize = 1024;
const BATCH: u64 = 1000;

pub fn table(env: &Env) -> Table {
    let records = env.scale(2_000, 20_000);
    Table::new(
        "Delta Lake: broker → delta-lake-sink → local Delta table",
        format!(
            "{records} datagen records of {SIZE} B (columns seq, topic, pad) fed by {} \
             producers; batches of what is waiting ([processing] batch_size = {BATCH}, \
             linger_ms = 0; reliable topics let 10 unacknowledged records out at a time). \
             Staged: the sink stages each batch and writes one Snappy Parquet file and one \
             log entry (with its txn) per {} staged rows (target_file_rows) or 4 s \
             (flush_interval_ms); unstaged (flush_interval_ms = 0): a file and a log entry \
             per batch. Rows/s committed from the first row in the table to the last. Python: the same rows written by \
             deltalake.write_deltalake (delta-rs) into a fresh local table, in batches of the \
             sink's rows per commit (for up to 20 s), and in one call; rows/s of the writes \
             alone (no broker).",
            crate::feed::PRODUCERS,
            file_rows(records)
        ),
        &[
            "broker",
            "rows",
            "sink rows/s",
            "commits",
            "rows per commit",
            "write_deltalake rows/s (same batches)",
            "write_deltalake rows/s (one call)",
            "sink / same batches",
        ],
    )
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let python = python(env)?;
    for staged in [true, false] {
        run_mode(env, table, &python, staged)?;
    }
    Ok(())
}

/// One sink run, its rows staged into files of `file_rows` or committed a
/// batch at a time, then write_deltalake with as many rows per call.
fn run_mode(env: &Env, table: &mut Table, python: &Path, staged: bool) -> anyhow::Result<()> {
    let records = env.scale(2_000, 20_000);
    let mode = if staged { "staged" } else { "unstaged" };
    let topic = env.topic(&format!("delta-{mode}"));
    let dir = env
        .work
        .path()
        .join(format!("delta-{}-{mode}", env.label()));
    let table_dir = dir.join("sink-table");
    std::fs::create_dir_all(&dir)?;
    env.block_on_within(Duration::from_secs(60), async {
        let client = crate::raw::client(env.url()).await?;
        drop(crate::raw::producer(&client, &topic, "bench-delta-topic").await?);
        anyhow::Ok(())
    })?;
    let staging = match staged {
        true => format!(
            "target_file_rows = {}\nflush_interval_ms = 4000\n",
            file_rows(records)
        ),
        false => "flush_interval_ms = 0\n".to_string(),
    };
    let mut host = HostProcess::start(
        env,
        &env.paths.guest("delta-lake-sink")?,
        &format!("bench-delta-{}", env.label()),
        &env.cache,
        &format!("dirs = [\"{}\"]", dir.display()),
        &format!(
            "[processing]\nbatch_size = {BATCH}\n\n\
             [deltalake]\nstorage_backend = \"local\"\n{staging}\n\
             [[deltalake.routes]]\nfrom = \"{topic}\"\nsubscription = \"bench\"\n\
             to = \"{}\"\nfield_mappings = [\n\
             {{ json_path = \"seq\", column = \"seq\", data_type = \"Int64\", nullable = false }},\n\
             {{ json_path = \"topic\", column = \"topic\", data_type = \"Utf8\", nullable = false }},\n\
             {{ json_path = \"pad\", column = \"pad\", data_type = \"Utf8\", nullable = false }},\n]\n",
            table_dir.display()
        ),
    )?;
    host.wait_ready(Duration::from_secs(60))?;
    let consumed = Arc::new(AtomicU64::new(0));
    let feeder = Feeder::start(
        env.url(),
        &topic,
        records,
        SIZE,
        consumed.clone(),
        env.limits().total,
    )?;
    // From the first row written to the last.
    let limits = env.limits();
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let mut last_progress = (Instant::now(), 0);
    let written = loop {
        // Staged (and acknowledged) records pace the feed; committed rows
        // are what the table holds.
        consumed.store(host.sent(), Ordering::Relaxed);
        let committed = host.counter("connector_guest_deltalake_rows_written_total");
        if committed > 0 && first.is_none() {
            first = Some((Instant::now(), committed));
        }
        if committed > last_progress.1 {
            last_progress = (Instant::now(), committed);
        }
        if committed >= records
            || started.elapsed() > limits.total
            || last_progress.0.elapsed() > limits.quiet
        {
            break committed;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let ended = Instant::now();
    feeder.finish()?;
    let log = host.log();
    host.stop()?;
    if written < records {
        bail!("the sink wrote {written} of {records} rows; host log:\n{log}");
    }
    let (at, from) = first.context("no row was written")?;
    let sink_rate = (written - from) as f64 / (ended - at).as_secs_f64().max(1e-9);
    let commits = std::fs::read_dir(table_dir.join("_delta_log"))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count() as u64;
    let per_commit = records.div_ceil(commits.max(1));

    let out = Command::new(python)
        .arg("-c")
        .arg(PYTHON)
        .arg(dir.join("python-table"))
        .arg(records.to_string())
        .arg(per_commit.to_string())
        .arg(SIZE.to_string())
        .arg(&topic)
        .output()?;
    if !out.status.success() {
        bail!(
            "write_deltalake failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rates = text.split_whitespace().map(|v| v.parse::<f64>());
    let (Some(Ok(batched)), Some(Ok(once))) = (rates.next(), rates.next()) else {
        bail!("write_deltalake printed no rates: {text}");
    };
    table.row(vec![
        env.label().to_string(),
        mode.to_string(),
        format!("{sink_rate:.0}"),
        commits.to_string(),
        per_commit.to_string(),
        format!("{batched:.0}"),
        format!("{once:.0}"),
        ratio(sink_rate, batched),
    ]);
    Ok(())
}

/// Rows per data file: four commits per run.
fn file_rows(records: u64) -> u64 {
    records / 4
}

/// The Python of `target/delta-tools`.
fn python(env: &Env) -> anyhow::Result<PathBuf> {
    let target = env
        .paths
        .host
        .parent()
        .and_then(|p| p.parent())
        .context("danube-host is not in target/")?;
    let python = target.join("delta-tools/bin/python");
    if !python.exists() {
        bail!(
            "{} is missing: run scripts/setup.sh (it installs deltalake)",
            python.display()
        );
    }
    Ok(python)
}

/// Writes the rows in batches of argv[3] (for at most about 20 s), then
/// all of them into another table in one call; prints both rates.
const PYTHON: &str = r#"
import sys, time, shutil
import pyarrow as pa
from deltalake import write_deltalake
path, n, batch, size, topic = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def rows(lo, hi):
    seqs = list(range(lo, hi))
    pads = []
    for s in seqs:
        bare = '{"seq":%d,"key":null,"topic":"%s","pad":""}' % (s, topic)
        pads.append("x" * max(0, size - len(bare)))
    return pa.table({"seq": pa.array(seqs, pa.int64()), "topic": [topic] * len(seqs), "pad": pads})
batches = [rows(lo, min(lo + batch, n)) for lo in range(0, n, batch)]
start = time.perf_counter()
written = 0
for b in batches:
    write_deltalake(path + "-batched", b, mode="append")
    written += b.num_rows
    if time.perf_counter() - start > 20:
        break  # each call reads the growing log: a rate is clear well before the end
batched = written / (time.perf_counter() - start)
whole = rows(0, n)
start = time.perf_counter()
write_deltalake(path + "-once", whole, mode="append")
once = n / (time.perf_counter() - start)
print(batched, once)
"#;
