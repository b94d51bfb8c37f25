//! `danube-host`: runs Danube connectors compiled to WebAssembly components.
//!
//! ```text
//! danube-host --module datagen_source.wasm --config datagen.toml   # run (also: run ...)
//! danube-host validate --module m.wasm --config c.toml            # check without running
//! danube-host inspect m.wasm                                       # what a module is
//! ```

mod config;
mod logging;
mod observability;
mod protocol;
mod schema;
mod supervisor;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use config::{ConnectorConfig, ENV_CONFIG_PATH, documented_keys};
use supervisor::{LogSettings, StateStore, exit};

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
    /// Describe a module: its world, contract version and configuration.
    Inspect {
        /// The connector's .wasm component.
        module: PathBuf,
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Internal: the sandboxed worker process (started by the host itself).
    #[command(hide = true)]
    Worker,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The connector's .wasm component.
    #[arg(long)]
    module: Option<PathBuf>,
    /// The connector's TOML configuration.
    #[arg(long, env = ENV_CONFIG_PATH)]
    config: Option<PathBuf>,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Worker) => worker::run(),
        Some(Command::Inspect { module, log_format }) => {
            let log = log_settings("warn", log_format);
            runtime().block_on(inspect(module, log))
        }
        Some(Command::Validate(args)) => match load(&args) {
            Ok((module, config)) => {
                let log = log_settings("warn", args.log_format);
                runtime().block_on(validate(module, config, log))
            }
            Err(code) => code,
        },
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let (module, config) = match load(&args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let log = log_settings(&config.host.processing.log_level, args.log_format);
    runtime().block_on(supervisor::run(module, config, log))
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
    match ConnectorConfig::load(&config_path) {
        Ok(config) => Ok((module, config)),
        Err(e) => usage(&e.to_string()),
    }
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

async fn inspect(module: PathBuf, log: LogSettings) -> ExitCode {
    match supervisor::start_worker(&module, None, StateStore::in_memory(), &log, None).await {
        Ok(worker) => {
            println!("{}", supervisor::describe_module(worker.info()));
            worker.shutdown().await;
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("danube-host: cannot load {}: {e:#}", module.display());
            ExitCode::from(exit::MODULE)
        }
    }
}

async fn validate(module: PathBuf, config: ConnectorConfig, log: LogSettings) -> ExitCode {
    let worker =
        match supervisor::start_worker(&module, Some(&config), StateStore::in_memory(), &log, None)
            .await
        {
            Ok(worker) => worker,
            Err(e) => {
                eprintln!("danube-host: cannot load {}: {e:#}", module.display());
                return ExitCode::from(exit::MODULE);
            }
        };
    let info = worker.info().clone();
    worker.shutdown().await;
    let documented = documented_keys(&info.config_example);
    if let Some(section) = &config.section
        && !documented.is_empty()
        && let Some(unknown) = config.connector.keys().find(|k| !documented.contains(*k))
    {
        let hint = match config::nearest(unknown, documented.iter().map(String::as_str)) {
            Some(near) => format!("did you mean `{section}.{near}`?"),
            None => format!(
                "it documents: {}",
                documented.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        eprintln!(
            "danube-host: {}: unknown key `{section}.{unknown}` for {}; {hint}",
            config.path.display(),
            info.name
        );
        return ExitCode::from(exit::CONFIG);
    }
    println!(
        "ok: {} runs {} connector {} {} (danube:connect@{})",
        config.host.connector_name, info.world, info.name, info.version, info.wit_version
    );
    ExitCode::from(exit::OK)
}
