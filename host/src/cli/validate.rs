//! `danube-host validate`: a module and its configuration checked together,
//! without a broker.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::ConnectorConfig;
use crate::contract::ModuleInfo;
use crate::exit;
use crate::supervisor::{self, Invalid, LogSettings};

pub async fn validate(module: PathBuf, mut config: ConnectorConfig, log: LogSettings) -> ExitCode {
    match validated(&module, &mut config, &log).await {
        Ok(info) => {
            println!(
                "ok: {} runs {} connector {} {} (danube:connect@{})",
                config.host.connector_name, info.world, info.name, info.version, info.wit_version
            );
            ExitCode::from(exit::OK)
        }
        Err(code) => code,
    }
}

/// The module's description when it and its configuration validate (the
/// configuration then has the environment's overrides applied), or the
/// exit code once what is wrong is on standard error (for `validate` and
/// the commands that begin as it does).
pub(super) async fn validated(
    module: &Path,
    config: &mut ConnectorConfig,
    log: &LogSettings,
) -> Result<ModuleInfo, ExitCode> {
    supervisor::validate(module, config, log)
        .await
        .map_err(|invalid| {
            eprintln!("danube-host: {}", invalid.describe(module));
            ExitCode::from(match invalid {
                Invalid::Module(_) => exit::MODULE,
                Invalid::Config(_) => exit::CONFIG,
            })
        })
}
