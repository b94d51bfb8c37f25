//! `danube-host inspect`: what a module is, without a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::capability::state::StateStore;
use crate::connector_table::ConnectorTable;
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

/// What `inspect` prints about a module: what it is, the keys of its
/// configuration table (from its schema, where it gives one) and its
/// example.
fn describe_module(info: &ModuleInfo) -> String {
    let keys = match ConnectorTable::of(info) {
        Ok(table) => table
            .key_lines()
            .map(|lines| format!("\n\nconfiguration keys:\n{lines}"))
            .unwrap_or_default(),
        Err(e) => format!("\n\nconfiguration keys: {e}"),
    };
    format!(
        "world: {}\ncontract: danube:connect@{}\nconnector: {} {}\n{}{keys}\n\nconfiguration example:\n{}",
        info.world,
        info.wit_version,
        info.name,
        info.version,
        info.description,
        info.config_example.trim_end()
    )
}
