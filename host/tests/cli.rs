//! `danube-host validate` and `inspect` on good and bad modules and bad
//! configuration files: each mistake is reported on exactly one line of
//! standard error that names the problem, with the documented exit code
//! (2 configuration, 3 module).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{guest, host_bin, target_dir};

const OK: i32 = 0;
const CONFIG: i32 = 2;
const MODULE: i32 = 3;

/// What one run of `danube-host` left behind.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    /// The single line of standard error, which must start with
    /// `danube-host: `; panics (showing everything) otherwise.
    fn error_line(&self) -> &str {
        let line = self.stderr.trim();
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "expected exactly one line on stderr, got: {self:#?}"
        );
        assert!(
            line.starts_with("danube-host: "),
            "stderr does not start with `danube-host: `: {self:#?}"
        );
        line
    }

    /// Asserts the exit code, an empty stdout and one error line holding
    /// every phrase; returns the line.
    fn fails_with(&self, code: i32, phrases: &[&str]) -> &str {
        assert_eq!(self.code, code, "exit code; {self:#?}");
        assert!(self.stdout.is_empty(), "stdout should be empty: {self:#?}");
        let line = self.error_line();
        for phrase in phrases {
            assert!(line.contains(phrase), "missing {phrase:?} in: {line}");
        }
        line
    }
}

/// Runs `danube-host ARGS` without any of the environment variables the host
/// reads, so that the caller's environment cannot mend a broken file.
fn host(args: &[&str]) -> Output {
    let out = Command::new(host_bin())
        .args(args)
        .env("XDG_CACHE_HOME", target_dir().join("test-module-cache"))
        .env_remove("DANUBE_SERVICE_URL")
        .env_remove("CONNECTOR_NAME")
        .env_remove("CONNECTOR_CONFIG_PATH")
        .env_remove("LOG_LEVEL")
        .env_remove("RUST_LOG")
        .output()
        .expect("danube-host runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn inspect(module: &Path) -> Output {
    host(&["inspect", path(module)])
}

fn validate(module: &Path, config: &Path) -> Output {
    host(&[
        "validate",
        "--module",
        path(module),
        "--config",
        path(config),
    ])
}

fn path(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The two root keys every configuration needs.
const ROOT: &str =
    "danube_service_url = \"http://127.0.0.1:6650\"\nconnector_name = \"cli-test\"\n";

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// A configuration the probe (a sink) accepts.
fn probe_config(dir: &Path) -> PathBuf {
    write(
        dir,
        "probe.toml",
        format!("{ROOT}\n[probe]\ntopic = \"/default/probe\"\n"),
    )
}

/// The probe component with every occurrence of `from` replaced by `to`
/// (same length, so no size field changes): a quick way to get a component
/// of another package or another contract version.
fn patched_probe(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    assert_eq!(from.len(), to.len(), "a patch must keep the length");
    let bytes = std::fs::read(guest("probe-connector")).unwrap();
    let mut patched = bytes.clone();
    let mut hits = 0;
    let mut i = 0;
    while let Some(at) = patched[i..]
        .windows(from.len())
        .position(|w| w == from.as_bytes())
    {
        patched[i + at..i + at + from.len()].copy_from_slice(to.as_bytes());
        i += at + from.len();
        hits += 1;
    }
    assert!(hits > 0, "{from:?} does not occur in the probe component");
    write(dir, name, patched)
}

// ---- good modules ----

#[test]
fn inspect_describes_datagen_source() {
    let out = inspect(&guest("datagen-source"));
    assert_eq!(out.code, OK, "{out:#?}");
    assert!(out.stderr.trim().is_empty(), "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "world: source", "{out:#?}");
    assert_eq!(lines[1], "contract: danube:connect@0.1.0", "{out:#?}");
    assert_eq!(lines[2], "connector: datagen-source 0.1.0", "{out:#?}");
    assert!(
        out.stdout.contains("configuration example:\n[datagen]"),
        "{out:#?}"
    );
}

#[test]
fn inspect_describes_file_sink() {
    let out = inspect(&guest("file-sink"));
    assert_eq!(out.code, OK, "{out:#?}");
    assert!(out.stderr.trim().is_empty(), "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "world: sink", "{out:#?}");
    assert_eq!(lines[1], "contract: danube:connect@0.1.0", "{out:#?}");
    assert_eq!(lines[2], "connector: file-sink 0.1.0", "{out:#?}");
    assert!(
        out.stdout.contains("configuration example:\n[file]"),
        "{out:#?}"
    );
}

#[test]
fn validate_accepts_good_modules_and_configs() {
    let dir = tempfile::tempdir().unwrap();
    let datagen = write(
        dir.path(),
        "datagen.toml",
        format!("{ROOT}\n[datagen]\ntopics = [\"/default/d\"]\ncount = 3\n"),
    );
    let out = validate(&guest("datagen-source"), &datagen);
    assert_eq!(out.code, OK, "{out:#?}");
    assert!(out.stderr.trim().is_empty(), "{out:#?}");
    assert_eq!(
        out.stdout.trim(),
        "ok: cli-test runs source connector datagen-source 0.1.0 (danube:connect@0.1.0)"
    );

    let sink = write(
        dir.path(),
        "file.toml",
        format!(
            "{ROOT}\n[file]\npath = \"{}\"\ntopics = [\"/default/d\"]\n",
            dir.path().display()
        ),
    );
    let out = validate(&guest("file-sink"), &sink);
    assert_eq!(out.code, OK, "{out:#?}");
    assert_eq!(
        out.stdout.trim(),
        "ok: cli-test runs sink connector file-sink 0.1.0 (danube:connect@0.1.0)"
    );
}

// ---- bad modules: exit 3, one line naming the module and the problem ----

#[test]
fn core_module_is_rejected_as_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(dir.path(), "core.wasm", b"\0asm\x01\0\0\0");
    let config = probe_config(dir.path());
    for out in [inspect(&module), validate(&module, &config)] {
        out.fails_with(
            MODULE,
            &[
                "core.wasm",
                "core WebAssembly module, not a component",
                "wasm32-wasip2",
            ],
        );
    }
}

#[test]
fn component_exporting_nothing_is_rejected_naming_the_missing_interface() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(dir.path(), "empty.wasm", b"\0asm\x0d\0\x01\0");
    let config = probe_config(dir.path());
    for out in [inspect(&module), validate(&module, &config)] {
        out.fails_with(
            MODULE,
            &[
                "empty.wasm",
                "exports no connector interface",
                "danube:connect/source-connector",
                "danube:connect/sink-connector",
            ],
        );
    }
}

#[test]
fn component_of_another_world_is_rejected_naming_what_it_exports() {
    let dir = tempfile::tempdir().unwrap();
    let module = patched_probe(
        dir.path(),
        "other-world.wasm",
        "danube:connect/sink-connector",
        "danube:example/sink-connector",
    );
    let config = probe_config(dir.path());
    for out in [inspect(&module), validate(&module, &config)] {
        out.fails_with(
            MODULE,
            &[
                "other-world.wasm",
                "exports no connector interface",
                "it exports [",
                "danube:example/sink-connector@0.1.0",
            ],
        );
    }
}

#[test]
fn component_of_another_contract_version_is_rejected_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let module = patched_probe(
        dir.path(),
        "v09.wasm",
        "sink-connector@0.1.0",
        "sink-connector@0.9.0",
    );
    let config = probe_config(dir.path());
    for out in [inspect(&module), validate(&module, &config)] {
        out.fails_with(
            MODULE,
            &[
                "v09.wasm",
                "built for danube:connect@0.9.0",
                "this host serves danube:connect@0.1.0",
            ],
        );
    }
}

#[test]
fn truncated_component_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(guest("datagen-source")).unwrap();
    let module = write(dir.path(), "half.wasm", &bytes[..bytes.len() / 2]);
    let config = probe_config(dir.path());
    for out in [inspect(&module), validate(&module, &config)] {
        out.fails_with(
            MODULE,
            &["half.wasm", "not a valid component", "truncated or corrupt"],
        );
    }
}

#[test]
fn text_file_is_rejected_as_not_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(dir.path(), "notes.wasm", "this is not WebAssembly\n");
    let config = probe_config(dir.path());
    for out in [inspect(&module), validate(&module, &config)] {
        out.fails_with(MODULE, &["notes.wasm", "not a WebAssembly file"]);
    }
}

#[test]
fn missing_module_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("nowhere.wasm");
    let config = probe_config(dir.path());
    for out in [inspect(&module), validate(&module, &config)] {
        out.fails_with(MODULE, &["nowhere.wasm", "No such file"]);
    }
}

// ---- bad configurations: exit 2, one line naming the file and the key ----

/// Validates the probe against a configuration file holding `text`.
fn validate_config(text: &str) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "bad.toml", text);
    (validate(&guest("probe-connector"), &config), dir)
}

#[test]
fn missing_service_url_is_named() {
    let (out, _dir) = validate_config("connector_name = \"x\"\n[probe]\n");
    out.fails_with(
        CONFIG,
        &[
            "bad.toml",
            "missing `danube_service_url`",
            "DANUBE_SERVICE_URL",
        ],
    );
}

#[test]
fn missing_connector_name_is_named() {
    let (out, _dir) = validate_config("danube_service_url = \"http://127.0.0.1:6650\"\n");
    out.fails_with(CONFIG, &["bad.toml", "missing `connector_name`"]);
}

#[test]
fn unknown_host_key_names_the_nearest_valid_key() {
    let (out, _dir) = validate_config(&format!("{ROOT}\n[processing]\nbatch_sise = 3\n"));
    let line = out.fails_with(CONFIG, &["bad.toml"]);
    assert!(
        line.ends_with(
            "unknown key `processing.batch_sise`; did you mean `processing.batch_size`?"
        ),
        "{line}"
    );
}

#[test]
fn misspelt_host_table_names_the_nearest_table() {
    let (out, _dir) = validate_config(&format!("{ROOT}\n[sandbx]\nmemory_mb = 64\n"));
    out.fails_with(
        CONFIG,
        &[
            "bad.toml",
            "unknown table [sandbx]; did you mean [sandbox]?",
        ],
    );
}

#[test]
fn unknown_connector_key_is_named_with_the_documented_keys() {
    let (out, _dir) = validate_config(&format!("{ROOT}\n[probe]\nalloc_mbb = 1\n"));
    out.fails_with(
        CONFIG,
        &[
            "bad.toml",
            "unknown key `probe.alloc_mbb`",
            "probe-connector",
            "alloc_mb",
        ],
    );
}

#[test]
fn a_value_the_connectors_schema_refuses_is_named_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "datagen.toml",
        format!("{ROOT}\n[datagen]\ntopics = [\"/default/d\"]\nrate = \"fast\"\n"),
    );
    let out = validate(&guest("datagen-source"), &config);
    let line = out.fails_with(
        CONFIG,
        &[
            "datagen.toml",
            "`datagen.rate`",
            "not of type \"integer\"",
            "datagen-source",
        ],
    );
    // Values are never quoted: a secret in the wrong shape is one.
    assert!(!line.contains("fast"), "{line}");
}

#[test]
fn inspect_lists_the_keys_of_the_connectors_schema() {
    let keys = key_list(&guest("clickhouse-sink"));
    assert!(
        keys.lines()
            .any(|l| l.starts_with("  url (string): ClickHouse's HTTP interface")),
        "{keys}"
    );
    assert!(
        keys.lines()
            .any(|l| l.starts_with("  connect_timeout_secs (integer): Bound")),
        "{keys}"
    );
}

/// The key list `inspect` prints from a module's schema, a line a key.
fn key_list(module: &Path) -> String {
    let out = inspect(module);
    assert_eq!(out.code, OK, "{out:#?}");
    out.stdout
        .split("configuration keys:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("no key list: {}", out.stdout))
        .to_string()
}

/// A connector's README documents every key its schema has: the table a
/// user reads cannot fall behind the one the host checks.
#[test]
fn every_key_of_a_connectors_schema_is_in_its_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors-wasm");
    // Every connector crate there (a cdylib), so a new one cannot be missed.
    let mut connectors: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|dir| {
            std::fs::read_to_string(root.join(dir).join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.contains("\"cdylib\""))
        })
        .collect();
    connectors.sort();
    assert!(connectors.len() >= 8, "{connectors:?}");
    for connector in &connectors {
        let readme = std::fs::read_to_string(root.join(connector).join("README.md")).unwrap();
        let list = key_list(&guest(connector));
        let keys: Vec<&str> = list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(!keys.is_empty(), "{connector}: {keys:?}");
        let missing: Vec<&&str> = keys
            .iter()
            .filter(|k| !readme.contains(&format!("| `{k}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "{connector}'s README has no table row for {missing:?}"
        );
    }
}

#[test]
fn wrong_type_is_one_line_naming_the_key() {
    let (out, _dir) = validate_config(&format!("{ROOT}\n[retry]\nmax_retries = \"x\"\n"));
    out.fails_with(
        CONFIG,
        &["bad.toml", "retry.max_retries", "invalid type", "u32"],
    );
}

#[test]
fn wrong_type_is_rejected_naming_the_key() {
    // The part of `wrong_type_is_one_line_naming_the_key` that holds today.
    let (out, _dir) = validate_config(&format!("{ROOT}\n[retry]\nmax_retries = \"x\"\n"));
    assert_eq!(out.code, CONFIG, "{out:#?}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    for phrase in ["bad.toml", "retry.max_retries", "invalid type", "u32"] {
        assert!(out.stderr.contains(phrase), "missing {phrase:?}: {out:#?}");
    }
}

#[test]
fn bad_service_url_is_explained() {
    let (out, _dir) =
        validate_config("danube_service_url = \"localhost:6650\"\nconnector_name = \"x\"\n");
    out.fails_with(
        CONFIG,
        &[
            "bad.toml",
            "`danube_service_url` = \"localhost:6650\" is not a broker URL",
            "no scheme",
        ],
    );
    let (out, _dir) =
        validate_config("danube_service_url = \"ftp://broker:6650\"\nconnector_name = \"x\"\n");
    out.fails_with(CONFIG, &["not a broker URL", "http or https"]);
    let (out, _dir) =
        validate_config("danube_service_url = \"http://broker\"\nconnector_name = \"x\"\n");
    out.fails_with(CONFIG, &["not a broker URL", "no port"]);
}

#[test]
fn malformed_toml_names_the_line() {
    let (out, _dir) = validate_config(&format!("{ROOT}\n[probe\ntopic = \"/default/p\"\n"));
    out.fails_with(CONFIG, &["bad.toml", "line 4"]);
}

#[test]
fn missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("absent.toml");
    let out = validate(&guest("probe-connector"), &config);
    out.fails_with(
        CONFIG,
        &[
            "absent.toml",
            "cannot read the configuration file",
            "No such file",
        ],
    );
}

#[test]
fn missing_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = probe_config(dir.path());
    let out = host(&["validate", "--config", path(&config)]);
    out.fails_with(CONFIG, &["missing --module"]);
    let module = guest("probe-connector");
    let out = host(&["validate", "--module", path(&module)]);
    out.fails_with(CONFIG, &["missing --config", "CONNECTOR_CONFIG_PATH"]);
}

#[test]
fn run_checks_the_configuration_like_validate() {
    // `run` must refuse a bad file before it starts anything.
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.toml",
        format!("{ROOT}\n[processing]\nbatch_sise = 3\n"),
    );
    let module = guest("probe-connector");
    let out = host(&["run", "--module", path(&module), "--config", path(&config)]);
    out.fails_with(
        CONFIG,
        &["bad.toml", "did you mean `processing.batch_size`?"],
    );
    // And a bad module with a good file is a module error.
    let config = probe_config(dir.path());
    let text = write(dir.path(), "notes.wasm", "not wasm");
    let out = host(&["run", "--module", path(&text), "--config", path(&config)]);
    assert_eq!(out.code, MODULE, "{out:#?}");
    let last = out.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("danube-host: connector cli-test: cannot load")
            && last.contains("not a WebAssembly file"),
        "{out:#?}"
    );
}

#[test]
fn validate_accepts_every_key_file_sink_documents() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "file.toml",
        format!(
            "{ROOT}\n[file]\npath = \"{}\"\ntopics = [\"/default/d\"]\nfail_on = \"poison\"\n",
            dir.path().display()
        ),
    );
    let out = validate(&guest("file-sink"), &config);
    assert_eq!(out.code, OK, "{out:#?}");
}

#[test]
fn config_messages_name_the_file_by_the_path_given() {
    // Every message starts with the file as the user wrote it, so one
    // glance tells which of several files is wrong.
    let (out, dir) = validate_config("connector_name = \"x\"\n");
    let line = out.fails_with(CONFIG, &[]);
    let expected = format!("danube-host: {}: ", dir.path().join("bad.toml").display());
    assert!(line.starts_with(&expected), "{line}");
}

#[test]
fn validate_reads_each_schema_file_and_names_the_one_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "good.json",
        r#"{"type":"object","properties":{"seq":{"type":"integer"}}}"#,
    );
    write(dir.path(), "broken.avsc", r#"{"type":"record","name":"E""#);
    let entry = |subject: &str, kind: &str, file: &str| {
        format!(
            "[[schemas]]\ntopic = \"/default/{subject}\"\nsubject = \"{subject}\"\nschema_type = \"{kind}\"\nschema_file = \"{file}\"\n"
        )
    };
    let config = |entries: &[String]| {
        write(
            dir.path(),
            "schemas.toml",
            format!("{ROOT}\n{}\n[probe]\n", entries.concat()),
        )
    };
    let good = entry("events", "json_schema", "good.json");

    let out = validate(
        &guest("probe-connector"),
        &config(std::slice::from_ref(&good)),
    );
    assert_eq!(out.code, OK, "{out:#?}");

    let out = validate(
        &guest("probe-connector"),
        &config(&[good.clone(), entry("orders", "avro", "broken.avsc")]),
    );
    out.fails_with(
        CONFIG,
        &[
            "schemas.toml",
            "subject 'orders'",
            "broken.avsc",
            "not a valid Avro schema",
        ],
    );

    let out = validate(
        &guest("probe-connector"),
        &config(&[good, entry("missing", "json_schema", "missing.json")]),
    );
    out.fails_with(
        CONFIG,
        &[
            "subject 'missing'",
            "cannot read schema_file",
            "missing.json",
        ],
    );
}

/// The compiled-module cache holds native code: an entry copied over another
/// module's (as a guest with write access to the cache could) fails its
/// authentication and is compiled again, so the module runs as itself.
#[test]
fn a_cache_entry_copied_over_another_modules_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let sandbox = format!("[sandbox]\ncache_dir = \"{}\"\n", cache.display());
    let entries = || -> std::collections::BTreeSet<PathBuf> {
        std::fs::read_dir(&cache)
            .map(|d| d.map(|e| e.unwrap().path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p: &PathBuf| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    };
    let probe = write(
        dir.path(),
        "probe.toml",
        format!("{ROOT}\n{sandbox}\n[probe]\n"),
    );
    assert_eq!(validate(&guest("probe-connector"), &probe).code, OK);
    let probe_entry = entries().into_iter().next().expect("the probe was cached");
    let datagen = write(
        dir.path(),
        "datagen.toml",
        format!("{ROOT}\n{sandbox}\n[datagen]\ntopics = [\"/default/d\"]\n"),
    );
    assert_eq!(validate(&guest("datagen-source"), &datagen).code, OK);
    let datagen_entry = entries()
        .into_iter()
        .find(|p| *p != probe_entry)
        .expect("datagen was cached");

    std::fs::copy(&probe_entry, &datagen_entry).unwrap();
    let out = validate(&guest("datagen-source"), &datagen);
    assert_eq!(out.code, OK, "{out:#?}");
    assert!(
        out.stdout.contains("source connector datagen-source"),
        "the swapped entry ran: {out:#?}"
    );
    assert!(out.stderr.contains("fails its authentication"), "{out:#?}");
}

/// A grant that reaches the host's own files (the compiled-module cache, the
/// configuration file, the state directory) is refused before anything runs:
/// a guest could otherwise change what runs next, and with which grants.
#[test]
fn grants_reaching_the_hosts_own_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let case = |dirs: &Path, extra: &str| {
        let config = write(
            dir.path(),
            "probe.toml",
            format!(
                "{ROOT}\n[sandbox]\ncache_dir = \"{}\"\ndirs = [\"{}\"]\n{extra}\n[probe]\n",
                cache.display(),
                dirs.display()
            ),
        );
        validate(&guest("probe-connector"), &config)
    };
    let out = case(&cache, "");
    let line = out.fails_with(CONFIG, &["[sandbox] dirs", "cannot be granted"]);
    assert!(
        line.contains("contains the compiled-module cache"),
        "{line}"
    );
    let out = case(&cache.join("inside"), "");
    let line = out.fails_with(CONFIG, &["lies inside the compiled-module cache"]);
    assert!(
        line.contains("grant a directory of the connector's own"),
        "{line}"
    );
    let out = case(dir.path(), "");
    out.fails_with(CONFIG, &["contains its configuration file"]);
    let state = dir.path().join("state");
    let out = case(
        &state,
        &format!("\n[state]\ndir = \"{}\"\n", state.display()),
    );
    out.fails_with(CONFIG, &["contains the state directory"]);
    // The control: a directory of the connector's own.
    let out = case(&dir.path().join("out"), "");
    assert_eq!(out.code, OK, "{out:#?}");
}

// ---- `danube-host test`: the conformance checks ----

/// `danube-host test --module M --config C`.
fn conformance(module: &Path, config: &Path) -> Output {
    conformance_with(module, config, &[])
}

/// `danube-host test --module M --config C --scenario S...`.
fn conformance_with(module: &Path, config: &Path, scenarios: &[&Path]) -> Output {
    let mut args = vec![
        "test",
        "--log-format",
        "text",
        "--module",
        module.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    for scenario in scenarios {
        args.extend(["--scenario", scenario.to_str().unwrap()]);
    }
    host(&args)
}

/// A file-sink configuration in `dir` writing into `dir/out` (made here),
/// with `extra` lines in its table: the configuration and the directory.
fn file_sink(dir: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let written = dir.join("out");
    std::fs::create_dir(&written).unwrap();
    let config = write(
        dir,
        "file.toml",
        format!(
            "{ROOT}\n[sandbox]\ndirs = [\"{0}\"]\n[file]\npath = \"{0}\"\ntopics = [\"/default/d\"]\n{extra}",
            written.display()
        ),
    );
    (config, written)
}

/// The line of a report's row for `check`.
fn row<'o>(out: &'o Output, check: &str) -> &'o str {
    out.stdout
        .lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no row {check:?}: {out:#?}"))
}

/// The rows of a report as (verdict, check).
fn rows(out: &Output) -> Vec<(String, String)> {
    out.stdout
        .lines()
        .filter_map(|l| {
            let l = l.strip_prefix("  ")?;
            let (verdict, rest) = l.split_once("  ")?;
            let check = rest.split("  ").next()?.trim().to_string();
            Some((verdict.to_string(), check))
        })
        .collect()
}

#[test]
fn the_repositorys_source_and_sink_keep_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let datagen = write(
        dir.path(),
        "datagen.toml",
        format!("{ROOT}\n[datagen]\ntopics = [\"/default/d\"]\n"),
    );
    let out = conformance(&guest("datagen-source"), &datagen);
    assert_eq!(out.code, OK, "{out:#?}");
    let rows = rows(&out);
    assert!(rows.len() >= 11, "{out:#?}");
    // A source that produces records runs every check but the one its
    // schema makes the host's (an unknown key).
    for (verdict, check) in &rows {
        let expected = match check.as_str() {
            "open refuses an unknown key, naming it" => "skip",
            _ => "pass",
        };
        assert_eq!(verdict, expected, "{check}: {out:#?}");
    }
    assert!(
        out.stdout
            .contains("pass  a restarted instance resumes after its last commit"),
        "{}",
        out.stdout
    );

    let (sink, written) = file_sink(dir.path(), "");
    let out = conformance(&guest("file-sink"), &sink);
    assert_eq!(out.code, OK, "{out:#?}");
    assert!(
        out.stdout
            .contains("pass  process-batch reports failures within its batch  3 of 3 written"),
        "{}",
        out.stdout
    );
    let lines = std::fs::read_to_string(written.join("records.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
}

/// A source that returns more records than it was asked for fails the
/// check, with the reason, and the command exits 4.
#[test]
fn a_connector_breaking_the_contract_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "probe.toml",
        format!("{ROOT}\n[probe]\noverfill_poll = true\n"),
    );
    let out = conformance(&guest("probe-source"), &config);
    assert_eq!(out.code, 4, "{out:#?}");
    let line = row(&out, "poll returns at most max");
    assert!(line.starts_with("  FAIL"), "{line}");
    assert!(
        line.contains("poll returned 4 records when asked for at most 3"),
        "{line}"
    );
    assert!(out.stdout.contains(" 1 failed"), "{}", out.stdout);
}

/// What does not validate is not tested: the same error and exit code as
/// `validate`.
#[test]
fn test_refuses_what_validate_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "datagen.toml",
        format!("{ROOT}\n[datagen]\nrtae = 1\n"),
    );
    let out = conformance(&guest("datagen-source"), &config);
    out.fails_with(
        CONFIG,
        &["unknown key `datagen.rtae`; did you mean `datagen.rate`?"],
    );
}

/// A connector's own scenarios run after the contract, a row each: a
/// source's first records matched field by field, a sink's records each
/// with the outcome it must get; a record that does not match fails its row
/// with the record and the difference, and the command exits 4.
#[test]
fn scenarios_check_what_a_connector_does_with_records() {
    let dir = tempfile::tempdir().unwrap();
    let datagen = write(
        dir.path(),
        "datagen.toml",
        format!("{ROOT}\n[datagen]\ntopics = [\"/default/a\", \"/default/b\"]\n"),
    );
    let strict = write(
        dir.path(),
        "strict.toml",
        "[[records]]\ntopic = \"/default/a\"\npayload = '{\"seq\":0,\"key\":null,\"topic\":\"/default/a\",\"pad\":\"\"}'\n\
         attributes = { seq = \"0\" }\n\n\
         [[records]]\ntopic = \"/default/b\"\npayload_json = { seq = 1, topic = \"/default/b\", pad = \"\" }\n",
    );
    // payload_json has no null: record 2's "key":null makes it differ.
    let wrong = write(
        dir.path(),
        "wrong.toml",
        "[[records]]\nattributes = { seq = \"0\" }\n\n[[records]]\nattributes = { seq = \"2\" }\n",
    );
    let out = conformance_with(&guest("datagen-source"), &datagen, &[&strict, &wrong]);
    assert_eq!(out.code, 4, "{out:#?}");
    let strict_row = row(&out, "scenario strict.toml");
    assert!(strict_row.starts_with("  FAIL"), "{strict_row}");
    assert!(
        strict_row.contains("record 2: payload {\"seq\":1,\"key\":null"),
        "{strict_row}"
    );
    let failed = row(&out, "scenario wrong.toml");
    assert!(
        failed.contains(r#"record 2: attribute "seq" is Some("1"), expected "2""#),
        "{failed}"
    );

    let right = write(
        dir.path(),
        "right.toml",
        "[[records]]\ntopic = \"/default/a\"\nattributes = { seq = \"0\" }\n\n\
         [[records]]\npayload = '{\"seq\":1,\"key\":null,\"topic\":\"/default/b\",\"pad\":\"\"}'\n",
    );
    let out = conformance_with(&guest("datagen-source"), &datagen, &[&right]);
    assert_eq!(out.code, OK, "{out:#?}");
    assert!(
        row(&out, "scenario right.toml").starts_with("  pass"),
        "{out:#?}"
    );

    // A sink: the file sink writes JSON lines, and refuses a record marked
    // with its `fail_on` field.
    let (sink, written) = file_sink(dir.path(), "fail_on = \"poison\"\n");
    let records = "[[records]]\npayload_json = { id = 1 }\n\n\
                   [[records]]\npayload_json = { id = 2, poison = true }\nexpect = \"invalid_data\"\n";
    let good = write(dir.path(), "good.toml", records);
    let bad = write(
        dir.path(),
        "bad.toml",
        records.replace("invalid_data", "written"),
    );
    let out = conformance_with(&guest("file-sink"), &sink, &[&good, &bad]);
    assert_eq!(out.code, 4, "{out:#?}");
    assert!(
        row(&out, "scenario good.toml").ends_with("2 records as expected"),
        "{out:#?}"
    );
    let line = row(&out, "scenario bad.toml");
    assert!(
        line.contains("record 2: invalid_data (") && line.ends_with("expected written"),
        "{line}"
    );
    let lines = std::fs::read_to_string(written.join("records.jsonl")).unwrap();
    assert!(lines.contains(r#""id":1"#), "{lines}");

    // A scenario file that cannot be used stops the command before any check.
    let broken = write(dir.path(), "broken.toml", "[[records]]\npayload = 1\n");
    let out = conformance_with(&guest("file-sink"), &sink, &[&broken]);
    out.fails_with(CONFIG, &["broken.toml: line 2", "expected a string"]);
}

/// Without `--config`, `test` runs the module's own configuration example:
/// datagen's passes as it is.
#[test]
fn test_without_a_configuration_uses_the_modules_example() {
    let module = guest("datagen-source");
    let out = host(&[
        "test",
        "--log-format",
        "text",
        "--module",
        module.to_str().unwrap(),
    ]);
    assert_eq!(out.code, OK, "{out:#?}");
    assert!(
        out.stdout
            .starts_with("no --config: testing the module's configuration example"),
        "{out:#?}"
    );
    assert!(
        row(&out, "a restarted instance resumes after its last commit").starts_with("  pass"),
        "{out:#?}"
    );
}
