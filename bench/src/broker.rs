//! The brokers the bench runs each scenario against: `danube-testkit`
//! started as a process of its own (so that it shares neither the bench's
//! runtime nor its CPU clock), and the real Danube broker, started by the
//! bench from `DANUBE_BROKER_BIN` (`danube_testkit::RealBroker`) or given by
//! URL. Each scenario gets a fresh broker of each kind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use danube_testkit::RealBroker;

/// Names the real broker's binary (read by `danube_testkit::RealBroker`).
pub const BROKER_BIN_VAR: &str = "DANUBE_BROKER_BIN";

/// Bounds a broker's start; `RealBroker` bounds each of its attempts itself.
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Which broker a row was measured against.
#[derive(Clone)]
pub enum Target {
    /// `danube-testkit`, the in-memory stand-in.
    Test,
    /// The real broker: started from `DANUBE_BROKER_BIN`, or at this URL.
    Real { url: Option<String> },
}

impl Target {
    /// The name in the tables' `broker` column.
    pub fn label(&self) -> &'static str {
        match self {
            Target::Test => "test",
            Target::Real { .. } => "real",
        }
    }

    /// What the heading says about this broker.
    pub fn describe(&self) -> String {
        match self {
            Target::Test => "`test` = danube-testkit, the in-memory stand-in broker (its own \
                             process on this machine, a fresh one per scenario)"
                .into(),
            Target::Real { url: Some(url) } => format!("`real` = the Danube broker at {url}"),
            Target::Real { url: None } => format!(
                "`real` = danube-broker from {} = {} (standalone, on this machine, started \
                 by the bench on a fresh data directory per scenario)",
                BROKER_BIN_VAR,
                std::env::var(BROKER_BIN_VAR).unwrap_or_default()
            ),
        }
    }

    pub fn start(
        &self,
        testkit: &Path,
        runtime: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Broker> {
        Ok(match self {
            Target::Test => Broker::testkit(testkit)?,
            Target::Real { url: Some(url) } => Broker {
                url: url.clone(),
                running: Running::External,
            },
            Target::Real { url: None } => {
                let real = runtime
                    .block_on(async {
                        tokio::time::timeout(START_TIMEOUT, RealBroker::start()).await
                    })
                    .context("danube-broker did not start within 180 s")??;
                Broker {
                    url: real.url(),
                    running: Running::Real(real),
                }
            }
        })
    }
}

pub struct Broker {
    pub url: String,
    running: Running,
}

enum Running {
    /// Stopped on drop.
    Testkit(Child),
    /// Killed on drop.
    Real(RealBroker),
    External,
}

impl Broker {
    /// Starts `danube-testkit` on a free loopback port; it prints its URL.
    fn testkit(binary: &Path) -> anyhow::Result<Broker> {
        let mut child = Command::new(binary)
            .args(["--port", "0"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let url = line.trim().to_string();
        if !url.starts_with("http") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("danube-testkit did not print its URL within 30 s (got {line:?})");
        }
        Ok(Broker {
            url,
            running: Running::Testkit(child),
        })
    }

    /// The broker's log so far, where the bench has it.
    pub fn log(&self) -> Option<String> {
        match &self.running {
            Running::Real(real) => Some(real.log()),
            _ => None,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Running::Testkit(child) = &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
