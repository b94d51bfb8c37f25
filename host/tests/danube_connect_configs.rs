//! danube-connect's configuration files (`fixtures/danube-connectors`, see
//! its SOURCE.md), read unchanged: for every connector, ours yet or not,
//! the host's part of each file is accepted and its schema files are found
//! from where danube-connect runs (the connector's directory), and the
//! connector's settings come out as the connector will read them.
//! mqtt-source's files are also validated with our module in
//! `mqtt_source.rs`.

use std::path::{Path, PathBuf};

use danube_host::config::ConnectorConfig;
use danube_host::schema::read_schema_file;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/danube-connectors")
}

fn toml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "toml") {
            found.push(path);
        }
    }
}

/// The only test of this binary: it changes the working directory, as
/// danube-connect's users run from the connector's directory.
#[test]
fn every_danube_connect_configuration_is_read_unchanged() {
    let mut files = Vec::new();
    toml_files(&fixtures(), &mut files);
    files.sort();
    assert_eq!(files.len(), 15, "{files:#?}");
    for file in &files {
        let relative = file.strip_prefix(fixtures()).unwrap();
        let connector_dir = fixtures().join(relative.iter().next().unwrap());
        std::env::set_current_dir(&connector_dir).unwrap();
        let config =
            ConnectorConfig::load(file).unwrap_or_else(|e| panic!("{}: {e}", relative.display()));

        // Where each connector keeps its settings.
        let expected = match relative.iter().next().unwrap().to_str().unwrap() {
            "source-mqtt" => Some("mqtt"),
            "sink-deltalake" => Some("deltalake"),
            "sink-qdrant" => Some("qdrant"),
            "sink-surrealdb" => Some("surrealdb"),
            "source-webhook" => None,
            other => panic!("a fixture of an unexpected connector: {other}"),
        };
        assert_eq!(
            config.section.as_deref(),
            expected,
            "{}",
            relative.display()
        );
        let routes = match expected {
            Some(_) => config.connector.get("routes"),
            None => {
                // The webhook's listener tables are the host's (ingress).
                assert!(config.host.server.is_some(), "{}", relative.display());
                assert!(config.host.auth.is_some(), "{}", relative.display());
                config.connector.get("routes")
            }
        };
        assert!(
            routes
                .and_then(|r| r.as_array())
                .is_some_and(|r| !r.is_empty()),
            "{}: no routes in {:?}",
            relative.display(),
            config.connector.keys().collect::<Vec<_>>()
        );

        // Schema files: found, except the ones the examples' containers
        // mount at /etc/schemas, which are named when they are missing.
        for entry in &config.host.schemas {
            let deployed = entry.schema_file.starts_with("/etc/schemas");
            match read_schema_file(&config, entry) {
                Ok(_) => assert!(!deployed, "{}", relative.display()),
                Err(e) => {
                    assert!(deployed, "{}: {e}", relative.display());
                    assert!(e.contains(&entry.schema_file.display().to_string()), "{e}");
                }
            }
        }
    }
}
