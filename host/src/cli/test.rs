//! `danube-host test`: the module checked against the contract
//! ([`crate::conformance`]), as a table with a reason per row; exit code 4
//! when a check fails, for CI.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::capability::state::StateStore;
use crate::config::ConnectorConfig;
use crate::conformance::{self, Scenario, Verdict};
use crate::exit;
use crate::supervisor::{self, Guest, LogSettings};

/// [`test`] with the module's own configuration example as its table,
/// under a configuration of defaults: for a first look before writing one.
pub async fn test_example(module: PathBuf, scenarios: &[PathBuf], log: LogSettings) -> ExitCode {
    let worker =
        match supervisor::start_worker(&module, None, StateStore::in_memory(), &log, None).await {
            Ok(worker) => worker,
            Err(e) => {
                eprintln!("danube-host: cannot load {}: {e:#}", module.display());
                return ExitCode::from(exit::MODULE);
            }
        };
    let info = worker.info().clone();
    worker.stop().await;
    let name: String = info
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let text = format!(
        "danube_service_url = \"http://127.0.0.1:6650\"\nconnector_name = \"{name}\"\n\n{}",
        info.config_example
    );
    // Relative paths in the example read from the module's directory.
    let path = module.with_extension("example.toml");
    let config = match ConnectorConfig::parse(&text, &path, &|k| std::env::var(k).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!(
                "danube-host: the module's configuration example does not parse ({e}); give --config"
            );
            return ExitCode::from(exit::CONFIG);
        }
    };
    println!(
        "no --config: testing the module's configuration example (danube-host inspect shows it)"
    );
    test(module, config, scenarios, log).await
}

/// Validates the module and its configuration as `validate` does (what does
/// not validate is not tested), reads the scenarios, then runs the checks.
pub async fn test(
    module: PathBuf,
    mut config: ConnectorConfig,
    scenarios: &[PathBuf],
    log: LogSettings,
) -> ExitCode {
    if let Err(code) = super::validate::validated(&module, &mut config, &log).await {
        return code;
    }
    let scenarios = match scenarios
        .iter()
        .map(|p| Scenario::load(p))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(scenarios) => scenarios,
        Err(message) => {
            eprintln!("danube-host: {message}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let report = match conformance::run(&module, &config, &log, &scenarios).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("danube-host: cannot load {}: {e:#}", module.display());
            return ExitCode::from(exit::MODULE);
        }
    };
    let info = &report.info;
    println!(
        "{} {} ({} connector, danube:connect@{})",
        info.name, info.version, info.world, info.wit_version
    );
    let width = report.rows.iter().map(|r| r.check.len()).max().unwrap_or(0);
    for row in &report.rows {
        let (verdict, detail) = match &row.verdict {
            Verdict::Pass(d) => ("pass", d),
            Verdict::Fail(d) => ("FAIL", d),
            Verdict::Skip(d) => ("skip", d),
        };
        println!("  {verdict}  {:width$}  {detail}", row.check);
    }
    let count = |f: fn(&Verdict) -> bool| report.rows.iter().filter(|r| f(&r.verdict)).count();
    let failed = count(Verdict::failed);
    println!(
        "{} checks: {} passed, {failed} failed, {} skipped",
        report.rows.len(),
        count(|v| matches!(v, Verdict::Pass(_))),
        count(|v| matches!(v, Verdict::Skip(_))),
    );
    ExitCode::from(match failed {
        0 => exit::OK,
        _ => exit::FATAL,
    })
}
