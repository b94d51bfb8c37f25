//! `danube-host validate`: a module and its configuration checked together,
//! without a broker.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::ConnectorConfig;
use crate::exit;
use crate::supervisor::{self, Invalid, LogSettings};

pub async fn validate(module: PathBuf, config: ConnectorConfig, log: LogSettings) -> ExitCode {
    match supervisor::validate(&module, &config, &log).await {
        Ok(info) => {
            println!(
                "ok: {} runs {} connector {} {} (danube:connect@{})",
                config.host.connector_name, info.world, info.name, info.version, info.wit_version
            );
            ExitCode::from(exit::OK)
        }
        Err(Invalid::Module(e)) => {
            eprintln!("danube-host: cannot load {}: {e:#}", module.display());
            ExitCode::from(exit::MODULE)
        }
        Err(Invalid::Config(message)) => {
            eprintln!("danube-host: {message}");
            ExitCode::from(exit::CONFIG)
        }
    }
}
