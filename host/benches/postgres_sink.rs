//! Throughput of the PostgreSQL sink: rows per second from a Danube topic
//! (the in-memory test broker), through `danube-host` running postgres-sink,
//! into a real PostgreSQL 15 (started here on a free loopback port).
//!
//! ```sh
//! cargo bench -p danube-host --bench postgres_sink
//! BENCH_RECORDS=50000 cargo bench -p danube-host --bench postgres_sink
//! ```
//!
//! Rows differ in the broker's dispatch window (`max_unacked_messages`:
//! delivered but unacknowledged messages per subscription; 10 is the real
//! broker's default and caps a batch at 10 records) and `batch_size`.
//! For each row: the sink subscribes and is stopped, `BENCH_RECORDS`
//! (default 20,000) JSON records of seven columns plus four metadata columns
//! (the tests' readings)
//! are produced into the backlog by four producers, then the sink starts
//! again. Time runs from that start (module load, connection and
//! subscription included) until `count(*)` of the table, polled every 50 ms,
//! reaches the number produced; afterwards the distinct keys are checked.
//! The last column divides the rows by the time the host spent inside the
//! connector's `process-batch` (`connector_processing_duration_seconds`):
//! the sink's own pace, without the broker's delivery and acknowledgements.
//! Needs Debian's `postgresql-15`.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::time::{Duration, Instant};

use common::postgres::{KEYED, Postgres, reading, route};
use common::{Host, endpoint, guest, http_get, reliable_producer, wait_subscribed, write_config};
use danube_testkit::{BrokerConfig, TestBroker};

const PASSWORD: &str = "bench-password";
const PRODUCERS: u64 = 4;

/// One row of the table.
#[derive(Clone, Copy)]
struct Case {
    window: usize,
    batch_size: usize,
}

struct Row {
    case: Case,
    produced: Duration,
    written: Duration,
    rows: i64,
    distinct: i64,
    /// Time spent inside `process-batch`.
    in_sink: Duration,
}

fn main() {
    let Some((records, runtime)) = harness::start("postgres_sink", "BENCH_RECORDS") else {
        return;
    };
    let pg = Postgres::start(PASSWORD);
    let mut rows = Vec::new();
    let cases = [
        Case {
            window: 10,
            batch_size: 500,
        },
        Case {
            window: 500,
            batch_size: 500,
        },
        Case {
            window: 2000,
            batch_size: 1000,
        },
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let row = runtime.block_on(run(i, case, records, &pg));
        eprintln!(
            "window {}, batch_size {}: {:.0} rows/s",
            case.window,
            case.batch_size,
            row.rows as f64 / row.written.as_secs_f64()
        );
        rows.push(row);
    }

    harness::print_table(
        &format!(
            "Danube test broker -> postgres-sink -> PostgreSQL 15: {records} records drained from a backlog"
        ),
        &[
            "max_unacked_messages",
            "batch_size",
            "produced in",
            "written in",
            "rows/s",
            "rows",
            "distinct keys",
            "in process-batch",
            "rows/s in the sink",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.case.window.to_string(),
                    r.case.batch_size.to_string(),
                    format!("{:.2} s", r.produced.as_secs_f64()),
                    format!("{:.2} s", r.written.as_secs_f64()),
                    format!("{:.0}", r.rows as f64 / r.written.as_secs_f64()),
                    r.rows.to_string(),
                    r.distinct.to_string(),
                    format!("{:.2} s", r.in_sink.as_secs_f64()),
                    format!("{:.0}", r.rows as f64 / r.in_sink.as_secs_f64()),
                ]
            })
            .collect::<Vec<_>>(),
    );
}

async fn run(index: usize, case: Case, records: u64, pg: &Postgres) -> Row {
    let broker = TestBroker::start_with(BrokerConfig {
        max_unacked_messages: case.window,
        ..BrokerConfig::default()
    })
    .await
    .unwrap();
    let batch_size = case.batch_size;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("pg-bench-{index}");
    let topic = format!("/default/bench-{index}");
    let table = format!("bench_{index}");
    let routes = route(&topic, "bench", &table, KEYED);
    let cfg = write_config(
        dir.path(),
        "bench.toml",
        &broker.url(),
        &name,
        &format!(
            "[processing]\nbatch_size = {batch_size}\n\n{}",
            pg.sink_config("", &routes)
        ),
    );
    let env = [("POSTGRES_PASSWORD", PASSWORD)];
    broker.create_topic(&topic, 0, true).unwrap();

    // Subscribe once, then stop: the records produced next wait in the backlog.
    let host = Host::start(&guest("postgres-sink"), &cfg, &env);
    wait_subscribed(&broker, std::slice::from_ref(&topic), "bench", &host).await;
    assert!(host.terminate(Duration::from_secs(30)).success());

    let started = Instant::now();
    let per_producer = records / PRODUCERS;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let url = broker.url();
            let topic = topic.clone();
            tokio::spawn(async move {
                let producer = reliable_producer(&url, &topic).await;
                for seq in p * per_producer..(p + 1) * per_producer {
                    producer
                        .send(serde_json::to_vec(&reading(seq, 1)).unwrap(), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let produced = started.elapsed();
    let expected = (per_producer * PRODUCERS) as i64;

    let started = Instant::now();
    let host = Host::start(&guest("postgres-sink"), &cfg, &env);
    let count_sql = format!("SELECT count(*) FROM {table}");
    let written = loop {
        let n = pg.count(&count_sql);
        if n >= expected {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "stalled at {n} of {expected}; log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let row = Row {
        case,
        produced,
        written,
        rows: pg.count(&count_sql),
        distinct: pg.count(&format!(
            "SELECT count(DISTINCT (device, seq)) FROM {table}"
        )),
        in_sink: process_batch_time(&host),
    };
    assert!(host.terminate(Duration::from_secs(30)).success());
    row
}

/// The time the host spent inside the connector's `process-batch`, from
/// `connector_processing_duration_seconds` on its `/metrics`.
fn process_batch_time(host: &Host) -> Duration {
    let addr = endpoint(host).expect("the host serves /metrics");
    let (_, body) = http_get(&addr, "/metrics");
    let seconds = body
        .lines()
        .find(|l| {
            l.starts_with("connector_processing_duration_seconds_sum{")
                && l.contains("call=\"process_batch\"")
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .expect("a process-batch duration on /metrics");
    Duration::from_secs_f64(seconds)
}
