//! `danube-bench`: measures `danube-host` beside the raw `danube-client` in
//! the same run — source and sink throughput, the worker boundary alone,
//! start-up, memory and latency — prints the tables and writes them to a
//! Markdown file. `scripts/bench.sh` builds everything and runs it.
//!
//! ```sh
//! scripts/bench.sh                                  # against danube-testkit started here
//! scripts/bench.sh --quick                          # seconds per scenario
//! scripts/bench.sh --broker http://danube:6650      # against a real cluster
//! ```

mod boundary;
mod broker;
mod host;
mod latency;
mod raw;
mod report;
mod startup;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use broker::Broker;
use host::Paths;
use report::Table;

/// The host's default `[processing] producers_per_topic`, which the raw
/// client's parallel baseline matches.
const HOST_PRODUCERS_PER_TOPIC: usize = 4;

#[derive(Parser)]
#[command(about = "Benchmarks danube-host against the raw danube-client, in the same run.")]
struct Args {
    /// Danube to use; without it, danube-testkit is started on a free port.
    #[arg(long)]
    broker: Option<String>,
    /// Small runs (seconds each), e.g. for CI.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Where the Markdown tables are written.
    #[arg(long, default_value = "target/bench/results.md")]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Scenario {
    Source,
    Sink,
    Boundary,
    Startup,
    Latency,
}

/// What every scenario needs: binaries, broker, a scratch directory and a
/// warm module cache, and a runtime for the raw client.
pub struct Env {
    paths: Paths,
    broker: Broker,
    work: tempfile::TempDir,
    cache: PathBuf,
    quick: bool,
    runtime: tokio::runtime::Runtime,
    /// Makes topic names unique, so runs against a real cluster do not meet.
    run_id: String,
}

impl Env {
    fn scale(&self, quick: u64, full: u64) -> u64 {
        if self.quick { quick } else { full }
    }

    fn topic(&self, name: &str) -> String {
        format!("/default/bench-{}-{name}", self.run_id)
    }

    /// `XDG_CACHE_HOME` for a `danube-host` that should use [`Env::cache`].
    fn xdg_cache_home(&self) -> &std::path::Path {
        self.cache.parent().expect("the cache is a subdirectory")
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("danube-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Compiles the guests into the bench's module cache (`danube-host inspect`
/// loads a module as a run does), so that no scenario but the first-run
/// start-up pays for a compile, nor a worker's memory holds the compiler's.
fn warm_cache(env: &Env) -> anyhow::Result<()> {
    for guest in ["datagen-source", "probe-connector"] {
        let status = std::process::Command::new(&env.paths.host)
            .arg("inspect")
            .arg(env.paths.guest(guest)?)
            .env("XDG_CACHE_HOME", env.xdg_cache_home())
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "danube-host inspect {guest} failed");
    }
    Ok(())
}

fn run(args: &Args) -> anyhow::Result<()> {
    let paths = Paths::beside_self()?;
    let broker = match &args.broker {
        Some(url) => Broker::external(url.clone()),
        None => Broker::testkit(&paths.testkit)?,
    };
    let work = tempfile::tempdir()?;
    let env = Env {
        cache: work.path().join("xdg-cache/danube-host"),
        paths,
        broker,
        work,
        quick: args.quick,
        runtime: tokio::runtime::Runtime::new()?,
        run_id: format!("{}", std::process::id()),
    };
    warm_cache(&env)?;
    let wanted = |s: Scenario| args.only.is_empty() || args.only.contains(&s);
    let heading = format!(
        "Measured on {}.\nBroker: {}. {} mode.\n\n",
        report::machine(),
        env.broker.describe(),
        if args.quick { "Quick" } else { "Full" },
    );
    print!("{heading}");
    let mut tables: Vec<Table> = Vec::new();
    let mut memory = throughput::Memory::new();
    let emit = |table: Table, tables: &mut Vec<Table>| {
        println!("{}", table.markdown());
        tables.push(table);
    };
    if wanted(Scenario::Source) {
        emit(throughput::source(&env, &mut memory)?, &mut tables);
    }
    if wanted(Scenario::Sink) {
        emit(throughput::sink(&env, &mut memory)?, &mut tables);
    }
    if wanted(Scenario::Boundary) {
        emit(boundary::run(&env)?, &mut tables);
    }
    if wanted(Scenario::Startup) {
        emit(startup::run(&env)?, &mut tables);
    }
    if wanted(Scenario::Latency) {
        emit(latency::run(&env)?, &mut tables);
    }
    if !memory.is_empty() {
        emit(throughput::memory_table(&memory), &mut tables);
    }
    let mut text = heading;
    for table in &tables {
        text += &table.markdown();
        text += "\n";
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, text)?;
    eprintln!("danube-bench: written to {}", args.out.display());
    Ok(())
}
