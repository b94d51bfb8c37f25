//! Any text as a configuration file: the loader returns a configuration or
//! a one-line error naming the file, and never panics.
#![no_main]

use std::path::Path;

use danube_host::config::{ConnectorConfig, declared_example, documented_example};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match ConnectorConfig::parse(&text, Path::new("c.toml"), &|_| None) {
        Ok(mut parsed) => {
            let _ = parsed.connector_json();
            let _ = parsed.dead_letter_topic();
            let _ = parsed.state_file();
            let _ = documented_example(&text);
            let declared = declared_example(&text);
            parsed.apply_connector_env(&declared, &|_| Some(text.to_string()));
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("c.toml: "), "{message}");
            assert!(!message.contains('\n'), "an error spans lines: {message:?}");
        }
    }
});
