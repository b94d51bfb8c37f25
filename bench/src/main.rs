//! `danube-bench`: measures `danube-host` beside the raw `danube-client` in
//! the same run — source and sink throughput with CPU time per record, the
//! worker boundary alone, start-up, memory and latency — against the test
//! broker and, when it has one, the real Danube broker; prints the tables
//! and writes them to a Markdown file. `scripts/bench.sh` builds everything
//! and runs it.
//!
//! ```sh
//! scripts/bench.sh                                  # danube-testkit, and danube-broker if DANUBE_BROKER_BIN is set
//! scripts/bench.sh --quick                          # seconds per scenario
//! scripts/bench.sh --broker http://danube:6650      # a running Danube as the real broker
//! ```
//!
//! Every wait is bounded: a measurement the broker stops short is reported
//! as unfinished in its table ("stalled at 8,550 of 10,000 ...") and the run
//! goes on. The exit status is non-zero only for errors.

mod bound;
mod boundary;
mod broker;
mod cpu;
mod delta;
mod feed;
mod host;
mod latency;
mod raw;
mod report;
mod startup;
mod throughput;
mod webhook;

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use bound::{Limits, Outcome};
use broker::{Broker, Target};
use host::Paths;
use report::Table;

/// The host's default `[processing] producers_per_topic`, which the raw
/// client's parallel baseline matches.
const HOST_PRODUCERS_PER_TOPIC: usize = 8;

#[derive(Parser)]
#[command(about = "Benchmarks danube-host against the raw danube-client, in the same run.")]
struct Args {
    /// A running Danube to use as the real broker; without it, the bench
    /// starts danube-broker from DANUBE_BROKER_BIN when that is set.
    #[arg(long)]
    broker: Option<String>,
    /// Brokers to run each scenario against (default: test, and real when
    /// there is one).
    #[arg(long, value_enum, value_delimiter = ',')]
    brokers: Vec<BrokerChoice>,
    /// Small runs (seconds each), e.g. for CI.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Runs of each source and sink row, to show their spread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    repeat: u32,
    /// Keeps the bench's directory (hosts' configurations and logs) and
    /// says where it is. The hosts log warnings; DANUBE_BENCH_HOST_LOG_LEVEL
    /// sets another level.
    #[arg(long)]
    keep: bool,
    /// Where the Markdown tables are written.
    #[arg(long, default_value = "target/bench/results.md")]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum BrokerChoice {
    Test,
    Real,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Scenario {
    Source,
    Sink,
    Boundary,
    Startup,
    Latency,
    Webhook,
    Delta,
    Tap,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Source => "source",
            Scenario::Sink => "sink",
            Scenario::Boundary => "boundary",
            Scenario::Startup => "startup",
            Scenario::Latency => "latency",
            Scenario::Webhook => "webhook",
            Scenario::Delta => "delta",
            Scenario::Tap => "tap",
        }
    }
}

/// What every scenario needs: binaries, the broker of the moment, a scratch
/// directory and a warm module cache, and a runtime for the raw client.
pub struct Env {
    paths: Paths,
    /// The broker the scenario runs against now.
    broker: Option<(Target, Broker)>,
    /// The scenario running now, for what is reported unfinished.
    scenario: &'static str,
    work: tempfile::TempDir,
    cache: PathBuf,
    quick: bool,
    repeat: u32,
    runtime: tokio::runtime::Runtime,
    /// Makes topic names unique, so runs against a real cluster do not meet.
    run_id: String,
    /// What did not finish, for the summary.
    unfinished: RefCell<Vec<String>>,
    /// How long each scenario took on each broker, and the machine's other
    /// load meanwhile, for the summary.
    timings: RefCell<Vec<String>>,
}

impl Env {
    fn scale(&self, quick: u64, full: u64) -> u64 {
        if self.quick { quick } else { full }
    }

    /// How long a counted measurement may take, and stay without progress.
    fn limits(&self) -> Limits {
        Limits {
            total: Duration::from_secs(self.scale(30, 60)),
            quiet: Duration::from_secs(10),
        }
    }

    fn topic(&self, name: &str) -> String {
        format!("/default/bench-{}-{name}", self.run_id)
    }

    fn url(&self) -> &str {
        &self.broker.as_ref().expect("a broker is running").1.url
    }

    /// `test` or `real`: the broker of the moment.
    fn label(&self) -> &'static str {
        self.broker
            .as_ref()
            .map_or("-", |(target, _)| target.label())
    }

    /// The first cell of a row: the broker, and the round when repeated.
    fn row_label(&self, round: u32) -> String {
        match self.repeat {
            1 => self.label().to_string(),
            _ => format!("{} (run {round})", self.label()),
        }
    }

    /// A rate as a cell: records per second, or what did not finish (also
    /// kept for the summary).
    fn rate(&self, what: &str, outcome: &Outcome<raw::Measured>) -> String {
        match outcome {
            Outcome::Done(m) => format!("{:.0}", m.records_per_s),
            Outcome::Unfinished(u) => self.unfinished(what, u.to_string()),
        }
    }

    /// Notes that `what` did not finish (`text` says how far it got);
    /// returns `text`, for the table.
    fn unfinished(&self, what: &str, text: String) -> String {
        self.unfinished.borrow_mut().push(format!(
            "{} on the {} broker, {what}: {text}",
            self.scenario,
            self.label()
        ));
        text
    }

    /// `XDG_CACHE_HOME` for a `danube-host` that should use [`Env::cache`].
    fn xdg_cache_home(&self) -> &std::path::Path {
        self.cache.parent().expect("the cache is a subdirectory")
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs `future`, failing if it takes longer than `limit`: for steps
    /// that are not counted (connecting, creating a producer).
    fn block_on_within<T>(
        &self,
        limit: Duration,
        future: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.runtime
            .block_on(async { tokio::time::timeout(limit, future).await })
            .map_err(|_| anyhow::anyhow!("did not finish within {limit:?}"))?
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(errors) => {
            eprintln!("danube-bench: {errors} scenario run(s) failed with an error (see above)");
            ExitCode::FAILURE
        }
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
    for guest in [
        "datagen-source",
        "probe-connector",
        "webhook-source",
        "delta-lake-sink",
    ] {
        let mut command = std::process::Command::new(&env.paths.host);
        command
            .arg("inspect")
            .arg(env.paths.guest(guest)?)
            .env("XDG_CACHE_HOME", env.xdg_cache_home());
        let output = bound::output_within(&mut command, Duration::from_secs(300))?;
        anyhow::ensure!(
            output.status.success(),
            "danube-host inspect {guest} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The brokers to run against, from the flags and `DANUBE_BROKER_BIN`.
fn targets(args: &Args) -> anyhow::Result<Vec<Target>> {
    let has_bin = std::env::var_os(broker::BROKER_BIN_VAR).is_some_and(|v| !v.is_empty());
    let real = Target::Real {
        url: args.broker.clone(),
    };
    if args.brokers.is_empty() {
        let mut targets = vec![Target::Test];
        if args.broker.is_some() || has_bin {
            targets.push(real);
        }
        return Ok(targets);
    }
    let mut targets = Vec::new();
    for choice in &args.brokers {
        match choice {
            BrokerChoice::Test => targets.push(Target::Test),
            BrokerChoice::Real => {
                anyhow::ensure!(
                    args.broker.is_some() || has_bin,
                    "--brokers real needs --broker URL or {} set",
                    broker::BROKER_BIN_VAR
                );
                targets.push(real.clone());
            }
        }
    }
    Ok(targets)
}

/// Runs `scenario` against each broker in turn, each started afresh; a
/// failure is noted in the table and counted, and the next broker follows.
fn on_each_broker(
    env: &mut Env,
    targets: &[Target],
    table: &mut Table,
    errors: &mut usize,
    mut scenario: impl FnMut(&Env, &mut Table) -> anyhow::Result<()>,
) {
    for target in targets {
        let started = Instant::now();
        let others = cpu::Others::now();
        match target.start(&env.paths.testkit, &env.runtime) {
            Ok(broker) => env.broker = Some((target.clone(), broker)),
            Err(e) => {
                eprintln!(
                    "danube-bench: {}: the {} broker did not start: {e:#}",
                    env.scenario,
                    target.label()
                );
                table.failed(target.label(), "error: the broker did not start");
                *errors += 1;
                continue;
            }
        }
        let result = scenario(env, table);
        if let Some(log) = env.broker.as_ref().and_then(|(_, b)| b.log()) {
            let lagged = log
                .lines()
                .filter(|l| l.contains("poll_next error"))
                .count();
            if lagged > 0 {
                env.unfinished.borrow_mut().push(format!(
                    "{}: the {} broker logged `poll_next error` {lagged} times (a reliable \
                     subscription fell past its WAL window and lost messages)",
                    env.scenario,
                    target.label()
                ));
            }
        }
        if let Err(e) = result {
            eprintln!(
                "danube-bench: {} on the {} broker failed: {e:#}",
                env.scenario,
                target.label()
            );
            let first_line = format!("{e:#}");
            let first_line = first_line.lines().next().unwrap_or_default();
            table.failed(target.label(), &format!("error: {first_line}"));
            *errors += 1;
        }
        env.broker = None;
        let busy = others.cores_since().unwrap_or(f64::NAN);
        let line = format!(
            "{} on the {} broker: {:.0} s; other processes used {busy:.2} cores meanwhile",
            env.scenario,
            target.label(),
            started.elapsed().as_secs_f64()
        );
        eprintln!("danube-bench: {line}");
        env.timings.borrow_mut().push(line);
    }
}

/// Runs the bench; returns how many scenario runs failed with an error.
fn run(args: &Args) -> anyhow::Result<usize> {
    let paths = Paths::beside_self()?;
    let targets = targets(args)?;
    let work = tempfile::tempdir()?;
    let mut env = Env {
        cache: work.path().join("xdg-cache/danube-host"),
        paths,
        broker: None,
        scenario: "",
        work,
        quick: args.quick,
        repeat: args.repeat,
        runtime: tokio::runtime::Runtime::new()?,
        run_id: format!("{}", std::process::id()),
        unfinished: RefCell::default(),
        timings: RefCell::default(),
    };
    let run_started = Instant::now();
    warm_cache(&env)?;
    let wanted = |s: Scenario| args.only.is_empty() || args.only.contains(&s);
    let heading = format!(
        "Measured on {}, {}.\nBrokers: {}.\n{} mode{}.\n\n",
        report::machine(),
        report::date(),
        targets
            .iter()
            .map(Target::describe)
            .collect::<Vec<_>>()
            .join("; "),
        if args.quick { "Quick" } else { "Full" },
        if args.repeat > 1 {
            format!(", source and sink rows run {} times", args.repeat)
        } else {
            String::new()
        },
    );
    print!("{heading}");
    let mut tables: Vec<Table> = Vec::new();
    let mut memory = throughput::Memory::new();
    let mut errors = 0;
    let emit = |table: Table, tables: &mut Vec<Table>| {
        println!("{}", table.markdown());
        tables.push(table);
    };
    for scenario in [
        Scenario::Source,
        Scenario::Sink,
        Scenario::Boundary,
        Scenario::Startup,
        Scenario::Latency,
        Scenario::Webhook,
        Scenario::Delta,
        Scenario::Tap,
    ] {
        if !wanted(scenario) {
            continue;
        }
        env.scenario = scenario.name();
        let table = match scenario {
            Scenario::Source => {
                let mut table = throughput::source_table(&env);
                on_each_broker(&mut env, &targets, &mut table, &mut errors, |env, t| {
                    throughput::source(env, t, &mut memory)
                });
                table
            }
            Scenario::Sink => {
                let mut table = throughput::sink_table(&env);
                on_each_broker(&mut env, &targets, &mut table, &mut errors, |env, t| {
                    throughput::sink(env, t, &mut memory)
                });
                table
            }
            // No broker: once.
            Scenario::Boundary => match boundary::run(&env) {
                Ok(table) => table,
                Err(e) => {
                    eprintln!("danube-bench: boundary failed: {e:#}");
                    errors += 1;
                    continue;
                }
            },
            Scenario::Startup => {
                let mut table = startup::table();
                on_each_broker(&mut env, &targets, &mut table, &mut errors, startup::run);
                table
            }
            Scenario::Latency => {
                let mut table = latency::table(&env);
                on_each_broker(&mut env, &targets, &mut table, &mut errors, latency::run);
                table
            }
            Scenario::Webhook => {
                let mut table = webhook::table(&env);
                on_each_broker(&mut env, &targets, &mut table, &mut errors, webhook::run);
                table
            }
            Scenario::Delta => {
                let mut table = delta::table(&env);
                on_each_broker(&mut env, &targets, &mut table, &mut errors, delta::run);
                table
            }
            Scenario::Tap => {
                let mut table = throughput::tap_table(&env);
                on_each_broker(&mut env, &targets, &mut table, &mut errors, throughput::tap);
                table
            }
        };
        emit(table, &mut tables);
    }
    if !memory.is_empty() {
        emit(throughput::memory_table(&memory), &mut tables);
    }
    let mut text = heading;
    for table in &tables {
        text += &table.markdown();
        text += "\n";
    }
    let unfinished = env.unfinished.borrow();
    let mut summary = format!(
        "The run took {:.0} s; load average {} at the end.\n\n",
        run_started.elapsed().as_secs_f64(),
        report::load_average()
    );
    for line in env.timings.borrow().iter() {
        summary += &format!("- {line}\n");
    }
    summary += "\n";
    if unfinished.is_empty() {
        summary += "Every measurement finished.\n";
    } else {
        summary += "Did not finish:\n\n";
        for line in unfinished.iter() {
            summary += &format!("- {line}\n");
        }
    }
    println!("{summary}");
    text += &summary;
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, text)?;
    eprintln!("danube-bench: written to {}", args.out.display());
    if args.keep {
        let dir = env.work.keep();
        eprintln!("danube-bench: hosts' logs kept in {}", dir.display());
    }
    Ok(errors)
}
