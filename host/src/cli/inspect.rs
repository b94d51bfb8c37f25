//! `danube-host inspect`: what a module is, without a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::capability::state::StateStore;
use crate::contract::ModuleInfo;
use crate::exit;
use crate::supervisor::{self, Guest, LogSettings};

/// Loads the module in a worker with the default limits and describes it.
pub async fn inspect(module: PathBuf, log: LogSettings) -> ExitCode {
    match supervisor::start_worker(&module, None, StateStore::in_memory(), &log, None).await {
        Ok(worker) => {
            println!("{}", describe_module(worker.info()));
            worker.stop().await;
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("danube-host: cannot load {}: {e:#}", module.display());
            ExitCode::from(exit::MODULE)
        }
    }
}

/// What `inspect` prints about a module.
fn describe_module(info: &ModuleInfo) -> String {
    format!(
        "world: {}\ncontract: danube:connect@{}\nconnector: {} {}\n{}\n\nconfiguration example:\n{}",
        info.world,
        info.wit_version,
        info.name,
        info.version,
        info.description,
        info.config_example.trim_end()
    )
}
