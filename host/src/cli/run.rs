//! `danube-host [run]`: one connector, or every connector of a directory.

use std::net::SocketAddr;
use std::process::ExitCode;

use super::{RunArgs, load, log_settings, runtime};
use crate::{directory, supervisor};

pub fn run(args: RunArgs) -> ExitCode {
    if let Some(dir) = args.modules_dir {
        let log = log_settings("info", args.log_format);
        let endpoint = SocketAddr::new(args.metrics_bind, args.metrics_port);
        return runtime().block_on(directory::run(dir, endpoint, log));
    }
    let (module, config) = match load(&args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let log = log_settings(&config.host.processing.log_level, args.log_format);
    runtime().block_on(supervisor::run(module, config, log))
}
