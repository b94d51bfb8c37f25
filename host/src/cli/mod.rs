//! The command line of `danube-host`: what each command takes and prints.
//! Everything it runs is in the rest of the library; `main.rs` only calls
//! [`main`].
//!
//! ```text
//! danube-host --module datagen_source.wasm --config datagen.toml   # run (also: run ...)
//! danube-host --modules-dir connectors/                            # run every NAME.wasm + NAME.toml
//! danube-host validate --module m.wasm --config c.toml            # check without running
//! danube-host inspect m.wasm                                       # what a module is
//! danube-host test --module m.wasm --config c.toml                # check it keeps the contract
//! danube-host new --lang python my-sink                            # start a connector
//! ```

mod dev;
mod inspect;
mod new;
mod ops;
mod run;
mod test;
mod validate;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, ConnectorConfig, ENV_CONFIG_PATH};
use crate::exit;
use crate::supervisor::LogSettings;
use crate::{bench_boundary, logging, scaffold, worker};

#[derive(Parser)]
#[command(
    name = "danube-host",
    version,
    about = "Runs Danube connectors compiled to WebAssembly components, each in a sandboxed worker process.",
    args_conflicts_with_subcommands = true,
    after_help = "Exit codes: 0 stopped cleanly, 1 internal error, 2 configuration error, 3 module cannot be loaded, 4 connector failed (fatal error, trap, retries spent)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a connector (the default when no subcommand is given).
    Run(RunArgs),
    /// Check a configuration file and a module without running them.
    Validate(RunArgs),
    /// Check a module against the contract: the calls in the host's orders,
    /// each answer held to what the contract promises (exit 4 if one fails).
    Test(TestArgs),
    /// Run one connector for development: started again when its module or
    /// configuration changes, rebuilt first when a watched source changes
    /// (`--build`), its state kept.
    Dev(DevArgs),
    /// Describe a module: its world, contract version and configuration.
    Inspect {
        /// The connector's .wasm component.
        module: PathBuf,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Create a connector directory (source, config, test, README) to start from.
    New {
        #[arg(long, value_enum)]
        lang: scaffold::Lang,
        /// A source or a sink (default: the language's first template).
        #[arg(long, value_enum)]
        world: Option<scaffold::Kind>,
        /// The connector's name, also its directory's.
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// A live view of a running host (started with --api): records/s in
    /// and out, errors, dead-lettered, in flight, restarts and health of
    /// each connector.
    Top(ops::TopArgs),
    /// Print a sample of the records a connector of a running host (started
    /// with --api) is reading or writing now.
    Tap(ops::TapArgs),
    /// Internal: the sandboxed worker process (started by the host itself).
    #[command(hide = true)]
    Worker,
    /// Internal: measures the supervisor-worker boundary (for danube-bench).
    #[command(hide = true)]
    BenchBoundary(bench_boundary::BenchArgs),
}

#[derive(Args, Clone)]
struct DevArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The command that builds the module (run with `sh -c` when a watched
    /// source changes), e.g. "cargo build --release --target wasm32-wasip2".
    #[arg(long, value_name = "COMMAND")]
    build: Option<String>,
    /// A source file or directory to watch (recursively) for `--build`; not
    /// the build's output directory. Repeatable.
    #[arg(long = "watch", value_name = "PATH", requires = "build")]
    watch: Vec<PathBuf>,
    /// Records printed a second at most, as they flow (the rest are
    /// counted); 0 prints none.
    #[arg(long, value_name = "N", default_value_t = 20)]
    records: u32,
}

#[derive(Args, Clone)]
struct TestArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A scenario of the connector's own (TOML: records to feed a sink or
    /// expect from a source; see docs/authoring.md), checked after the
    /// contract. Repeatable.
    #[arg(long = "scenario", value_name = "FILE")]
    scenarios: Vec<PathBuf>,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The connector's .wasm component.
    #[arg(long)]
    module: Option<PathBuf>,
    /// The connector's TOML configuration.
    #[arg(long, env = ENV_CONFIG_PATH)]
    config: Option<PathBuf>,
    /// Run every `NAME.wasm` with its `NAME.toml` in this directory, and
    /// start, replace or stop connectors as the files change (SIGHUP rescans).
    #[arg(long, conflicts_with_all = ["module", "config"])]
    modules_dir: Option<PathBuf>,
    /// Directory mode: address of the shared /metrics, /health and /ready
    /// (loopback unless set; the container image sets 0.0.0.0).
    #[arg(long, env = config::ENV_METRICS_BIND, default_value = "127.0.0.1", requires = "modules_dir")]
    metrics_bind: IpAddr,
    /// Directory mode: port of the shared /metrics, /health and /ready (0 picks
    /// a free one, logged).
    #[arg(long, default_value_t = 9090, requires = "modules_dir")]
    metrics_port: u16,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Serve the management API (`/connectors`: list, pause, resume,
    /// restart, tap; `/openapi.json`) on the metrics endpoint, for
    /// `danube-host top` and `tap`. Off loopback it needs a token.
    #[arg(long, env = "DANUBE_HOST_API")]
    api: bool,
    /// A file holding the API's bearer token (at least 16 characters);
    /// every API request must then send `Authorization: Bearer <token>`.
    #[arg(
        long,
        value_name = "FILE",
        env = "DANUBE_HOST_API_TOKEN_FILE",
        requires = "api"
    )]
    api_token_file: Option<PathBuf>,
    /// Also let the connector connect to HOST:PORT, as an entry of
    /// `[sandbox] allow` does (repeatable): for a file written without a
    /// `[sandbox]` table, such as danube-connect's, run as it is.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "modules_dir")]
    allow: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Parses the command line and runs what it asks.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Worker) => worker::run(),
        Some(Command::BenchBoundary(args)) => runtime().block_on(bench_boundary::run(args)),
        Some(Command::Inspect { module, log_format }) => {
            let log = log_settings("warn", log_format);
            runtime().block_on(inspect::inspect(module, log))
        }
        Some(Command::Dev(args)) => dev::dev(args),
        Some(Command::Top(args)) => ops::top(args),
        Some(Command::Tap(args)) => ops::tap(args),
        Some(Command::Test(args)) => match (&args.run.module, &args.run.config) {
            // Without a configuration, the module's own example is tested.
            (Some(module), None) => {
                let log = log_settings("warn", args.run.log_format);
                runtime().block_on(test::test_example(module.clone(), &args.scenarios, log))
            }
            _ => match load(&args.run) {
                Ok((module, config)) => {
                    let log = log_settings("warn", args.run.log_format);
                    runtime().block_on(test::test(module, config, &args.scenarios, log))
                }
                Err(code) => code,
            },
        },
        Some(Command::Validate(args)) => match load(&args) {
            Ok((module, config)) => {
                let log = log_settings("warn", args.log_format);
                runtime().block_on(validate::validate(module, config, log))
            }
            Err(code) => code,
        },
        Some(Command::New {
            lang,
            world,
            name,
            dir,
        }) => new::new(lang, world, &name, &dir),
        Some(Command::Run(args)) => run::run(args),
        None => run::run(cli.run),
    }
}

/// Reads the command line's module and configuration, or explains what is
/// missing.
fn load(args: &RunArgs) -> Result<(PathBuf, ConnectorConfig), ExitCode> {
    let usage = |message: &str| {
        eprintln!("danube-host: {message}");
        Err(ExitCode::from(exit::CONFIG))
    };
    let Some(module) = args.module.clone() else {
        return usage("missing --module: the connector's .wasm component (see --help)");
    };
    let Some(config_path) = args.config.clone() else {
        return usage(&format!(
            "missing --config: the connector's TOML configuration (or set {ENV_CONFIG_PATH})"
        ));
    };
    match load_config(&config_path, &args.allow) {
        Ok(config) => Ok((module, config)),
        Err(e) => usage(&e.to_string()),
    }
}

/// The configuration file with the command line's `--allow` grants added.
fn load_config(path: &Path, allow: &[String]) -> Result<ConnectorConfig, config::ConfigError> {
    let mut config = ConnectorConfig::load(path)?;
    config.host.sandbox.allow.extend(allow.iter().cloned());
    Ok(config)
}

fn log_settings(configured: &str, format: LogFormat) -> LogSettings {
    let settings = LogSettings {
        filter: logging::filter_from_env(configured),
        json: format == LogFormat::Json,
    };
    logging::init(&settings.filter, settings.json);
    settings
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("danube-host: cannot start the async runtime: {e}");
            std::process::exit(exit::INTERNAL.into())
        }
    }
}
