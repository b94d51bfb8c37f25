//! Scenario: webhooks. Concurrent HTTP senders post to webhook-source on
//! the host's listener, each waiting for its answer (200 once Danube
//! stored the event) before the next; beside the same load sent to a plain
//! axum handler in this process that only answers — the ceiling an HTTP
//! server on this machine sets, with no broker behind it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Env;
use crate::cpu;
use crate::host::HostProcess;
use crate::report::{Table, ratio};

const SENDERS: usize = 32;
const PATH: &str = "/webhooks/bench";

pub fn table(env: &Env) -> Table {
    let requests = env.scale(2_000, 20_000);
    Table::new(
        "Webhooks: senders → webhook-source → broker",
        format!(
            "{requests} requests of about 100 B from {SENDERS} concurrent senders with keep-alive, \
             each waiting for its answer before the next; the host answers 200 once the broker \
             acknowledged the record (reliable topic). Plain axum: the same load to a handler in \
             the bench's process that answers at once. p99: of the 200 answers. Host CPU: the \
             supervisor and worker per request."
        ),
        &[
            "broker",
            "host req/s",
            "host p50",
            "host p99",
            "host CPU µs/req",
            "plain axum req/s",
            "plain p99",
            "host / plain",
        ],
    )
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let requests = env.scale(2_000, 20_000) as usize;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let topic = env.topic("webhooks");
    let mut host = HostProcess::start(
        env,
        &env.paths.guest("webhook-source")?,
        "bench-webhook",
        &env.cache,
        "",
        &format!(
            "[server]\nhost = \"127.0.0.1\"\nport = {port}\n\n\
             [[endpoints]]\npath = \"{PATH}\"\ndanube_topic = \"{topic}\"\nreliable_dispatch = true\n"
        ),
    )?;
    host.wait_ready(Duration::from_secs(60))?;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    // Warm-up: connections, producers and code paths.
    load(target, SENDERS * 10)?;
    let before = host.cpu().context("the host's CPU time")?;
    let through_host = load(target, requests)?;
    let after = host.cpu().context("the host's CPU time")?;
    anyhow::ensure!(
        through_host.refused == 0,
        "{} requests were not answered 200; host log:\n{}",
        through_host.refused,
        host.log()
    );
    let host_cpu = before
        .until(&after)
        .map(|d| cpu::per_record(d, requests as u64));
    host.stop()?;

    let plain = env.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(|| async {
            axum::Json(serde_json::json!({"status": "stored", "records": 1}))
        });
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let measured = tokio::task::spawn_blocking(move || load(addr, requests)).await?;
        server.abort();
        measured
    })?;
    table.row(vec![
        env.label().to_string(),
        format!("{:.0}", through_host.per_second),
        ms(through_host.p50),
        ms(through_host.p99),
        host_cpu.map_or("—".into(), |us| format!("{us:.0}")),
        format!("{:.0}", plain.per_second),
        ms(plain.p99),
        ratio(through_host.per_second, plain.per_second),
    ]);
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// What one load brought.
struct Load {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// Answers other than 200.
    refused: usize,
}

/// `requests` POSTs to `target` from [`SENDERS`] threads, each with its own
/// keep-alive connection, one request at a time.
fn load(target: SocketAddr, requests: usize) -> anyhow::Result<Load> {
    let url: Arc<str> = format!("http://{target}{PATH}").into();
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let url = url.clone();
            let count = requests / SENDERS + usize::from(s < requests % SENDERS);
            std::thread::spawn(move || -> anyhow::Result<(Vec<Duration>, usize)> {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build()
                    .into();
                let mut latencies = Vec::with_capacity(count);
                let mut refused = 0;
                for i in 0..count {
                    let body = format!(
                        r#"{{"sender": {s}, "n": {i}, "amount": 1200, "currency": "eur"}}"#
                    );
                    let sent = Instant::now();
                    let status = agent
                        .post(&*url)
                        .header("content-type", "application/json")
                        .send(body.as_bytes())?
                        .status();
                    match status.as_u16() {
                        200 => latencies.push(sent.elapsed()),
                        _ => refused += 1,
                    }
                }
                Ok((latencies, refused))
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    let mut refused = 0;
    for sender in senders {
        let (l, r) = sender
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        latencies.extend(l);
        refused += r;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let at = |q: usize| {
        latencies
            .get((latencies.len() * q / 100).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Load {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(50),
        p99: at(99),
        refused,
    })
}
