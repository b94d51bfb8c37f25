//! Throughput of the ClickHouse sink: rows per second from Danube (the
//! in-memory test broker), through `danube-host` running clickhouse-sink,
//! into a real ClickHouse (started here on free loopback ports).
//!
//! ```sh
//! cargo bench -p danube-host --bench clickhouse_sink
//! BENCH_MESSAGES=50000 cargo bench -p danube-host --bench clickhouse_sink
//! ```
//!
//! For each row, a fresh ClickHouse table, broker and host. `BENCH_MESSAGES`
//! (default 20,000) JSON records of 8 typed columns plus 4 metadata columns
//! are published while the host is stopped, so they wait as a backlog; the
//! host is then started and the clock runs from the first rows seen in
//! ClickHouse to the last (`SELECT count()` polled every 20 ms). The count
//! with FINAL is checked afterwards. Needs the Debian package
//! `clickhouse-server`.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::time::{Duration, Instant};

use common::clickhouse::{ClickHouse, broker, reading, route, sink_config, start_host};
use common::produce_json;
use common::{wait_subscribed, wait_until};

/// One row of the table.
struct Case {
    /// Unacked messages the broker lets a subscription have out.
    max_unacked: usize,
    /// The host's `[processing] batch_size`.
    batch_size: u32,
}

fn main() {
    let Some((messages, runtime)) = harness::start("clickhouse_sink", "BENCH_MESSAGES") else {
        return;
    };
    let cases = [
        Case {
            max_unacked: 10,
            batch_size: 500,
        },
        Case {
            max_unacked: 1000,
            batch_size: 500,
        },
        Case {
            max_unacked: 5000,
            batch_size: 5000,
        },
    ];
    let ch = ClickHouse::start();
    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let rate = runtime.block_on(run(&ch, i, case, messages));
        eprintln!(
            "unacked {}, batch {}: {rate:.0} rows/s",
            case.max_unacked, case.batch_size
        );
        rows.push(rate);
    }
    harness::print_table(
        &format!(
            "Danube test broker -> clickhouse-sink -> ClickHouse 18.16: {messages} JSON records, 12 columns"
        ),
        &["broker max unacked", "batch_size", "rows/s"],
        &cases
            .iter()
            .zip(rows)
            .map(|(case, rate)| {
                vec![
                    case.max_unacked.to_string(),
                    case.batch_size.to_string(),
                    format!("{rate:.0}"),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

/// Rows per second for one case.
async fn run(ch: &ClickHouse, index: usize, case: &Case, messages: u64) -> f64 {
    let topic = format!("/default/bench-{index}");
    let table = format!("bench_{index}");
    let broker = broker(&topic, case.max_unacked).await;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("ch-bench-{index}");
    let routes = format!(
        "{}\n[processing]\nbatch_size = {}\n",
        route(&topic, "bench", &table),
        case.batch_size
    );
    let cfg = sink_config(dir.path(), &broker, &name, ch, &routes);

    // Subscribe once, so the backlog is kept for the subscription.
    let host = start_host(&cfg);
    wait_subscribed(&broker, std::slice::from_ref(&topic), "bench", &host).await;
    assert!(host.terminate(Duration::from_secs(30)).success());
    produce_json(broker.url(), &topic, (0..messages).map(reading)).await;

    let count_sql = format!("SELECT count() FROM {table}");
    let host = start_host(&cfg);
    let mut first = (0, Instant::now());
    assert!(
        wait_until(Duration::from_secs(120), || {
            first = (ch.count(&count_sql), Instant::now());
            first.0 > 0
        }),
        "no rows arrived; log:\n{}",
        host.log()
    );
    let mut last = first;
    assert!(
        wait_until(Duration::from_secs(600), || {
            last = (ch.count(&count_sql), Instant::now());
            last.0 >= messages
        }),
        "{} of {messages} rows arrived; log:\n{}",
        last.0,
        host.log()
    );
    assert_eq!(
        ch.count(&format!("SELECT count() FROM {table} FINAL")),
        messages
    );
    assert!(host.terminate(Duration::from_secs(30)).success());
    (last.0 - first.0) as f64 / (last.1 - first.1).as_secs_f64()
}
