//! `danube-host [run]`: one connector, or every connector of a directory.

use std::net::SocketAddr;
use std::process::ExitCode;

use super::{RunArgs, load, log_settings, runtime};
use crate::supervisor::ApiSettings;
use crate::{directory, exit, supervisor};

pub fn run(args: RunArgs) -> ExitCode {
    let api = match api_settings(&args) {
        Ok(api) => api,
        Err(message) => {
            eprintln!("danube-host: {message}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    if let Some(dir) = args.modules_dir {
        let log = log_settings("info", args.log_format);
        let endpoint = SocketAddr::new(args.metrics_bind, args.metrics_port);
        return runtime().block_on(directory::run(dir, endpoint, log, api));
    }
    let (module, config) = match load(&args) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let log = log_settings(&config.host.processing.log_level, args.log_format);
    runtime().block_on(supervisor::run(module, config, log, api))
}

/// `--api` and the token of `--api-token-file`.
fn api_settings(args: &RunArgs) -> Result<ApiSettings, String> {
    let token = match &args.api_token_file {
        Some(path) => {
            let token = crate::operations::read_token(path)?;
            if token.len() < 16 {
                return Err(format!(
                    "--api-token-file {}: the token is shorter than 16 characters; use a long \
                     random one (openssl rand -hex 32)",
                    path.display()
                ));
            }
            Some(token)
        }
        None => None,
    };
    Ok(ApiSettings {
        enabled: args.api,
        token,
    })
}
