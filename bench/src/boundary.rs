//! Scenario 3: the process boundary alone, no broker. `danube-host
//! bench-boundary` sends `process-batch` calls from the supervisor's worker
//! handle to a real worker process running the probe guest, two batches in
//! flight as the sink pipeline keeps them.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::report::{Table, mb_per_s};
use crate::{Env, bound};

pub fn run(env: &Env) -> anyhow::Result<Table> {
    let records = env.scale(20_000, 200_000);
    let batches = [1, 100, 1000];
    let mut command = Command::new(&env.paths.host);
    command
        .arg("bench-boundary")
        .arg("--module")
        .arg(env.paths.guest("probe-connector")?)
        .args(["--records", &records.to_string()])
        .env("XDG_CACHE_HOME", env.xdg_cache_home());
    for batch in batches {
        command.args(["--batch", &batch.to_string()]);
    }
    for size in [100, 1024] {
        command.args(["--payload", &size.to_string()]);
    }
    let output = bound::output_within(&mut command, Duration::from_secs(600))
        .context("cannot run danube-host bench-boundary")?;
    if !output.status.success() {
        bail!(
            "danube-host bench-boundary failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let mut table = Table::new(
        "Boundary: supervisor → worker process → guest process-batch → back (no broker)",
        format!(
            "{records} records per row (a batch-1 row sends as many calls), sink records with a \
             topic, one attribute and the payload; the probe guest accepts each. CPU: µs of CPU \
             time per record, the supervisor's side (building the records included) and the worker \
             process together."
        ),
        &[
            "payload",
            "batch",
            "rec/s",
            "MB/s",
            "µs per call",
            "CPU µs/rec",
        ],
    );
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let case: serde_json::Value = serde_json::from_str(line)?;
        let field = |name: &str| {
            case[name]
                .as_f64()
                .with_context(|| format!("{name} in {line}"))
        };
        let (batch, payload, count, seconds, cpu_seconds) = (
            field("batch")?,
            field("payload")?,
            field("records")?,
            field("seconds")?,
            field("cpu_seconds")?,
        );
        let rate = count / seconds;
        table.row(vec![
            format!("{payload} B"),
            format!("{batch}"),
            format!("{rate:.0}"),
            mb_per_s(rate, payload as usize),
            format!("{:.1}", seconds * 1e6 / (count / batch)),
            format!("{:.2}", cpu_seconds * 1e6 / count),
        ]);
    }
    Ok(table)
}
