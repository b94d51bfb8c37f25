//! `danube-testkit`: runs the in-memory test broker as a process, for quick
//! starts and manual runs. Not for production: nothing is persisted.
//! `danube-testkit create-topics --admin-url URL --topic T:N` creates topics
//! on any Danube broker through its admin API, so that a script can have
//! sinks subscribe before the first record (the real broker's own admin
//! tool is not at hand where this is built).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Parser, Subcommand};
use danube_testkit::{BrokerConfig, TestBroker, create_topic};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// An in-memory broker speaking Danube's gRPC protocol, for tests only.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 6650)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Delivered but unacked messages allowed per reliable subscription.
    #[arg(long, default_value_t = 10)]
    max_unacked_messages: usize,
    /// Milliseconds before an unacked message is redelivered.
    #[arg(long, default_value_t = 30_000)]
    ack_timeout_ms: u64,
    /// Largest payload accepted, in bytes.
    #[arg(long, default_value_t = 5 * 1024 * 1024)]
    max_payload_bytes: usize,
    /// Creates a reliable topic at start, `/namespace/name` or
    /// `/namespace/name:PARTITIONS`, so consumers can subscribe before the
    /// first message. Repeatable.
    #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]")]
    topics: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Creates reliable topics on a running Danube broker (the real one or
    /// this one) through its admin API, then exits.
    CreateTopics {
        /// The broker's admin API, e.g. http://127.0.0.1:50051.
        #[arg(long)]
        admin_url: String,
        /// `/namespace/name` or `/namespace/name:PARTITIONS`. Repeatable.
        #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]", required = true)]
        topics: Vec<String>,
    },
}

/// `/ns/name` or `/ns/name:N`.
fn topic_spec(spec: &str) -> anyhow::Result<(&str, u32)> {
    match spec.rsplit_once(':') {
        Some((topic, n)) => Ok((
            topic,
            n.parse()
                .map_err(|_| anyhow::anyhow!("--topic {spec}: {n:?} is not a partition count"))?,
        )),
        None => Ok((spec, 0)),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(Command::CreateTopics { admin_url, topics }) = &args.command {
        for spec in topics {
            let (topic, partitions) = topic_spec(spec)?;
            create_topic(admin_url, topic, partitions, true)
                .await
                .map_err(|e| anyhow::anyhow!("--topic {spec}: {}", e.message()))?;
            info!(topic, partitions, admin_url, "topic created");
        }
        return Ok(());
    }
    let broker = TestBroker::start_with(BrokerConfig {
        addr: SocketAddr::new(args.host, args.port),
        max_unacked_messages: args.max_unacked_messages,
        ack_timeout: Duration::from_millis(args.ack_timeout_ms),
        max_payload_bytes: args.max_payload_bytes,
    })
    .await?;
    for spec in &args.topics {
        let (topic, partitions) = topic_spec(spec)?;
        broker
            .create_topic(topic, partitions, true)
            .map_err(|e| anyhow::anyhow!("--topic {spec}: {}", e.message()))?;
        info!(topic, partitions, "topic created");
    }
    warn!(
        "this is danube-testkit, an in-memory TEST broker: not for production, all data is lost on exit"
    );
    info!(url = %broker.url(), "serving the Danube gRPC protocol");
    // The bare URL on stdout, for scripts that start the broker and connect to it.
    println!("{}", broker.url());
    shutdown_signal().await?;
    info!("shutting down");
    broker.stop().await;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
