//! Any text as a configuration file: the loader returns a configuration or
//! a one-line error naming the file, and never panics. The same text as a
//! module's example and as its configuration schema (guest text) never
//! panics either.
#![no_main]

use std::path::Path;

use danube_host::config::ConnectorConfig;
use danube_host::connector_table::ConnectorTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let schema = ConnectorTable::from_schema(&text);
    if let Ok(schema) = &schema {
        let _ = schema.key_lines();
    }
    match ConnectorConfig::parse(&text, Path::new("c.toml"), &|_| None) {
        Ok(mut parsed) => {
            let _ = parsed.connector_json();
            let _ = parsed.dead_letter_topic();
            let _ = parsed.state_file();
            let example = ConnectorTable::from_example(&text);
            let _ = example.check(parsed.section.as_deref(), &parsed.connector);
            parsed.apply_connector_env(&example, &|_| Some(text.to_string()));
            if let Ok(schema) = &schema {
                let _ = schema.check(parsed.section.as_deref(), &parsed.connector);
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("c.toml: "), "{message}");
            assert!(!message.contains('\n'), "an error spans lines: {message:?}");
        }
    }
});
