//! The deployment files in `docker/` against the host they deploy.
//!
//! Every `danube-host` command line they carry (the Dockerfiles, the compose
//! file, the Kubernetes manifests) goes through `danube-host validate` with
//! the configuration file and the environment it would get there; the files
//! pass hadolint, `docker compose config` and the Kubernetes schemas; and the
//! image's entrypoint runs a connector as PID 1 of a PID namespace of its own,
//! as in a container, answering the image's health check and draining on
//! SIGTERM. No container engine is needed. The linters are installed by
//! `scripts/setup.sh`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{guest, host_bin, target_dir, wait_until, write_config};
use serde_json::Value;

/// The image that runs danube-host (docker/Dockerfile), as the compose file
/// and the manifests name it.
const HOST_IMAGE: &str = "danube-connect/danube-host:";
/// Where the host image keeps the connectors it was built with.
const IMAGE_CONNECTORS: &str = "/opt/danube/connectors/";

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A linter installed by scripts/setup.sh.
fn tool(name: &str) -> PathBuf {
    let path = target_dir().join("deploy-tools/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (it installs hadolint, docker-compose and kubernetes-validate)",
        path.display()
    );
    path
}

/// Runs a command to completion; panics naming it if it does not succeed.
fn succeeds(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

// ---------------------------------------------------------------------------
// What the deployment files say: danube-host command lines.

/// One way the deployment files start danube-host.
#[derive(Debug)]
struct Launch {
    /// Where it comes from, for messages: `compose.yaml: postgres-sink-1`.
    origin: String,
    /// The arguments after `danube-host`.
    args: Vec<String>,
    /// The environment it gets.
    env: BTreeMap<String, String>,
    /// Files at container paths (`--module`, `--config`), as local files.
    files: BTreeMap<String, PathBuf>,
    /// Copies started with these arguments (compose: `deploy.replicas`).
    replicas: u64,
}

/// Dockerfile instructions as (keyword, rest), continuation lines joined.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .iter()
        .filter_map(|i| i.split_once(' '))
        .map(|(keyword, rest)| (keyword.to_string(), rest.trim().to_string()))
        .collect()
}

/// The instructions of the last stage: the image that runs.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut all = instructions(dockerfile);
    let from = all.iter().rposition(|(k, _)| k == "FROM").unwrap_or(0);
    all.split_off(from)
}

/// The exec-form (JSON) argument of the last `keyword` instruction.
fn exec_form(instructions: &[(String, String)], keyword: &str) -> Option<Vec<String>> {
    let (_, rest) = instructions.iter().rev().find(|(k, _)| k == keyword)?;
    Some(
        serde_json::from_str(rest)
            .unwrap_or_else(|e| panic!("{keyword} {rest} is not in exec form (a JSON array): {e}")),
    )
}

/// The host image's ENTRYPOINT, split at `danube-host`: what runs before it
/// (the init) and the arguments it already carries.
fn host_entrypoint() -> (Vec<String>, Vec<String>) {
    let entrypoint = exec_form(
        &final_stage(&read(&docker_dir().join("Dockerfile"))),
        "ENTRYPOINT",
    )
    .expect("docker/Dockerfile has an ENTRYPOINT");
    let at = entrypoint
        .iter()
        .position(|a| a == "danube-host")
        .unwrap_or_else(|| panic!("the ENTRYPOINT {entrypoint:?} does not run danube-host"));
    (entrypoint[..at].to_vec(), entrypoint[at + 1..].to_vec())
}

fn launch(origin: String, args: Vec<String>) -> Launch {
    Launch {
        origin,
        args,
        env: BTreeMap::new(),
        files: BTreeMap::new(),
        replicas: 1,
    }
}

/// A compose service or Kubernetes container (`spec`) that runs the host
/// image: the image's ENTRYPOINT with `spec[command]` as its arguments.
/// Replacing the ENTRYPOINT (`spec[entrypoint]`) would drop its init.
fn host_launch(origin: String, spec: &Value, entrypoint: &str, command: &str) -> Option<Launch> {
    if !spec["image"]
        .as_str()
        .is_some_and(|i| i.starts_with(HOST_IMAGE))
    {
        return None;
    }
    assert!(
        spec[entrypoint].is_null(),
        "{origin} replaces the image's ENTRYPOINT (and its init)"
    );
    let (_, mut args) = host_entrypoint();
    args.extend(strings(&spec[command]));
    Some(launch(origin, args))
}

/// docker/Dockerfile: the image's default command line.
fn dockerfile_launches() -> Vec<Launch> {
    let (_, mut args) = host_entrypoint();
    args.extend(
        exec_form(&final_stage(&read(&docker_dir().join("Dockerfile"))), "CMD").unwrap_or_default(),
    );
    vec![launch("Dockerfile".into(), args)]
}

/// docker/connector.Dockerfile: its CMD with the files of the build example
/// in its header (`--build-arg MODULE=...`), as COPY puts them.
fn connector_dockerfile_launches() -> Vec<Launch> {
    let text = read(&docker_dir().join("connector.Dockerfile"));
    let build_args: BTreeMap<String, String> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--build-arg")
        .filter_map(|w| w[1].split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let instructions = final_stage(&text);
    let (_, mut args) = host_entrypoint();
    args.extend(exec_form(&instructions, "CMD").expect("connector.Dockerfile has a CMD"));
    let mut launch = launch("connector.Dockerfile".into(), args);
    for (_, copy) in instructions.iter().filter(|(k, _)| k == "COPY") {
        let (source, dest) = copy.split_once(' ').expect("COPY SOURCE DEST");
        let arg = source.trim_start_matches("${").trim_end_matches('}');
        let example = build_args
            .get(arg)
            .unwrap_or_else(|| panic!("the header's example sets no --build-arg {arg}"));
        let local = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(example);
        launch.files.insert(dest.trim().to_string(), local);
    }
    vec![launch]
}

/// The compose file as `docker compose config` resolves it (every profile,
/// the variables of .env.example), as JSON.
fn compose_config() -> Value {
    let docker = docker_dir();
    let json = succeeds(
        Command::new(tool("docker-compose"))
            .args(["--env-file", ".env.example", "-f", "compose.yaml"])
            .args(["--profile", "*", "config", "--format", "json"])
            .current_dir(&docker)
            .env_clear(),
    );
    serde_json::from_str(&json).expect("compose config prints JSON")
}

/// Strings of a JSON array (empty when absent).
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// docker/compose.yaml: every service running the host image.
fn compose_launches(config: &Value) -> Vec<Launch> {
    let services = config["services"].as_object().expect("services");
    services
        .iter()
        .filter_map(|(name, service)| {
            let origin = format!("compose.yaml: {name}");
            let mut launch = host_launch(origin, service, "entrypoint", "command")?;
            if let Some(env) = service["environment"].as_object() {
                for (k, v) in env {
                    launch
                        .env
                        .insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                }
            }
            for volume in service["volumes"].as_array().into_iter().flatten() {
                if volume["type"] == "bind" {
                    let target = volume["target"].as_str().unwrap().to_string();
                    launch
                        .files
                        .insert(target, PathBuf::from(volume["source"].as_str().unwrap()));
                }
            }
            launch.replicas = service["deploy"]["replicas"].as_u64().unwrap_or(1);
            Some(launch)
        })
        .collect()
}

/// Every document of every manifest in docker/k8s, with its file name.
fn manifests() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(docker_dir().join("k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml_ng::Deserializer::from_str(&read(&file)) {
            let value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("k8s/{name}: {e}"));
            docs.push((name.clone(), value));
        }
    }
    docs
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("k8s/: no {kind} named {name}"))
}

/// `$(VAR)` references of a Kubernetes env value, expanded.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    env.iter().fold(value.to_string(), |v, (k, x)| {
        v.replace(&format!("$({k})"), x)
    })
}

/// docker/k8s: every container running the host image, with the files its
/// ConfigMaps put at their mount paths (written to `dir`) and its environment
/// resolved: Secret keys from the Secret, the pod's name as the first
/// replica's (`<workload>-0`).
fn k8s_launches(docs: &[(String, Value)], dir: &Path) -> Vec<Launch> {
    let mut launches = Vec::new();
    for (file, workload) in docs {
        if !matches!(
            workload["kind"].as_str(),
            Some("Deployment" | "StatefulSet")
        ) {
            continue;
        }
        let workload_name = workload["metadata"]["name"].as_str().unwrap();
        let pod = &workload["spec"]["template"]["spec"];
        for container in pod["containers"].as_array().unwrap() {
            let origin = format!("k8s/{file}: {workload_name}");
            let Some(mut launch) = host_launch(origin, container, "command", "args") else {
                continue;
            };
            for var in container["env"].as_array().into_iter().flatten() {
                let name = var["name"].as_str().unwrap().to_string();
                let from = &var["valueFrom"];
                let value = if let Some(value) = var["value"].as_str() {
                    expand(value, &launch.env)
                } else if from["fieldRef"]["fieldPath"] == "metadata.name" {
                    format!("{workload_name}-0")
                } else if let Some(key) = from["secretKeyRef"]["key"].as_str() {
                    let secret = find(
                        docs,
                        "Secret",
                        from["secretKeyRef"]["name"].as_str().unwrap(),
                    );
                    secret["stringData"][key]
                        .as_str()
                        .unwrap_or_else(|| panic!("k8s/{file}: the Secret has no key {key}"))
                        .to_string()
                } else {
                    panic!("k8s/{file}: env {name}: a source this test does not know: {from}")
                };
                launch.env.insert(name, value);
            }
            for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                let volume = pod["volumes"]
                    .as_array()
                    .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]));
                let Some(map_name) = volume.and_then(|v| v["configMap"]["name"].as_str()) else {
                    continue;
                };
                let config_map = find(docs, "ConfigMap", map_name);
                for (key, text) in config_map["data"].as_object().unwrap() {
                    let local = dir.join(format!("{map_name}-{key}"));
                    std::fs::write(&local, text.as_str().unwrap()).unwrap();
                    let at = format!("{}/{key}", mount["mountPath"].as_str().unwrap());
                    launch.files.insert(at, local);
                }
            }
            launches.push(launch);
        }
    }
    launches
}

// ---------------------------------------------------------------------------
// Running them through danube-host.

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The connector crate a module of the host image is built from, if this
/// workspace has it: `/opt/danube/connectors/mqtt_source.wasm` → `mqtt-source`.
fn workspace_connector(module: &str) -> Option<String> {
    let file = module.strip_prefix(IMAGE_CONNECTORS)?;
    let package = file.strip_suffix(".wasm")?.replace('_', "-");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../connectors-wasm")
        .join(&package)
        .join("Cargo.toml");
    manifest.exists().then_some(package)
}

/// danube-host with exactly `launch`'s environment (nothing inherited that
/// the host reads).
fn host_command(launch: &Launch) -> Command {
    let mut command = Command::new(host_bin());
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("XDG_CACHE_HOME", target_dir().join("test-module-cache"))
        .envs(&launch.env)
        .stdin(Stdio::null());
    command
}

/// Runs one launch's command line through clap as written, then through
/// `danube-host validate` with its files: the module (built from this
/// workspace) and the configuration. A module this workspace does not have
/// is replaced by a missing file, so the host checks the command line and the
/// configuration's host-level keys and then stops at loading the module.
fn validate(launch: &Launch, scratch: &Path) {
    let what = &launch.origin;
    let out = host_command(launch)
        .args(&launch.args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: `danube-host {}` does not parse: {}",
        launch.args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    if launch.args.iter().any(|a| a == "--help") {
        println!("{what}: `danube-host {}` parses", launch.args.join(" "));
        return;
    }

    let module = flag_value(&launch.args, "--module")
        .unwrap_or_else(|| panic!("{what}: no --module in {:?}", launch.args));
    let config = flag_value(&launch.args, "--config")
        .unwrap_or_else(|| panic!("{what}: no --config in {:?}", launch.args));
    let local_config = launch
        .files
        .get(config)
        .unwrap_or_else(|| panic!("{what}: nothing puts a file at {config}"));
    let (local_module, built) = match launch.files.get(module) {
        Some(file) => (file.clone(), true),
        None => match workspace_connector(module) {
            Some(package) => (guest(&package), true),
            None => (scratch.join(Path::new(module).file_name().unwrap()), false),
        },
    };
    let mapped: Vec<String> = launch
        .args
        .iter()
        .map(|a| match a.as_str() {
            a if a == module => local_module.display().to_string(),
            a if a == config => local_config.display().to_string(),
            a => a.to_string(),
        })
        .collect();
    let out = host_command(launch)
        .arg("validate")
        .args(&mapped)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if built {
        assert!(
            out.status.success(),
            "{what}: `danube-host validate` refused {config}: {stderr}"
        );
        println!("{what}: {}", stdout.trim());
    } else {
        // Exit 3 (module) comes after the configuration was accepted; a
        // configuration error is exit 2.
        assert!(
            out.status.code() == Some(3) && stderr.contains("cannot load"),
            "{what}: `danube-host validate` refused {config}: {stderr}"
        );
        println!(
            "{what}: {module} is not built in this workspace: checked the command line and the host-level keys of {config} only"
        );
    }
}

/// The connector name a launch runs under: CONNECTOR_NAME, else the file's.
fn connector_name(launch: &Launch) -> String {
    if let Some(name) = launch.env.get("CONNECTOR_NAME") {
        return name.clone();
    }
    let config = flag_value(&launch.args, "--config").unwrap();
    let table: toml::Table = read(&launch.files[config]).parse().unwrap();
    table["connector_name"].as_str().unwrap().to_string()
}

fn all_launches(scratch: &Path) -> Vec<Launch> {
    let mut launches = dockerfile_launches();
    launches.extend(connector_dockerfile_launches());
    launches.extend(compose_launches(&compose_config()));
    launches.extend(k8s_launches(&manifests(), scratch));
    launches
}

#[test]
fn every_danube_host_command_line_validates_with_its_configuration() {
    let scratch = tempfile::tempdir().unwrap();
    let launches = all_launches(scratch.path());
    // The Dockerfile's default, connector.Dockerfile's example, the compose
    // connectors and the Kubernetes workloads.
    for origin in [
        "Dockerfile",
        "connector.Dockerfile",
        "compose.yaml: mqtt-source",
        "compose.yaml: postgres-sink-1",
        "k8s/mqtt-source.yaml: mqtt-source",
        "k8s/postgres-sink.yaml: postgres-sink",
    ] {
        assert!(
            launches.iter().any(|l| l.origin == origin),
            "no command line found for {origin}: {:?}",
            launches.iter().map(|l| &l.origin).collect::<Vec<_>>()
        );
    }
    for launch in &launches {
        validate(launch, scratch.path());
    }
}

/// Variables the host reads itself (README: Configuration, Observability).
const HOST_VARIABLES: &[&str] = &[
    "DANUBE_SERVICE_URL",
    "CONNECTOR_NAME",
    "CONNECTOR_CONFIG_PATH",
    "LOG_LEVEL",
    "RUST_LOG",
    "METRICS_BIND",
];

/// The host's own tables: every other table of a file is the connector's.
const HOST_TABLES: &[&str] = &[
    "retry",
    "processing",
    "sandbox",
    "state",
    "dead_letter",
    "metrics",
    "broker",
    "schemas",
];

/// The keys of a connector table that `SECTION_KEY` variables may set: those
/// in the file, and those the module's configuration example shows (from
/// `danube-host inspect`, for modules built in this workspace).
fn overridable_keys(launch: &Launch) -> (String, Vec<String>) {
    let config = flag_value(&launch.args, "--config").unwrap();
    let table: toml::Table = read(&launch.files[config]).parse().unwrap();
    let (section, keys) = table
        .iter()
        .find(|(k, v)| v.is_table() && !HOST_TABLES.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_table().unwrap().keys().cloned().collect::<Vec<_>>(),
            )
        })
        .unwrap_or_else(|| panic!("{}: no connector table in {config}", launch.origin));
    let mut keys = keys;
    let module = flag_value(&launch.args, "--module").unwrap();
    if let Some(package) = workspace_connector(module) {
        let out = succeeds(Command::new(host_bin()).arg("inspect").arg(guest(&package)));
        let example = out
            .split_once("configuration example:")
            .map(|(_, e)| e)
            .unwrap_or_default();
        if let Ok(doc) = example.parse::<toml::Table>()
            && let Some(toml::Value::Table(t)) = doc.get(&section)
        {
            keys.extend(t.keys().cloned());
        }
    }
    (section, keys)
}

/// Every variable the deployment files hand to a connector is one that is
/// read: the host's own, or `SECTION_KEY` for a key of the connector's table
/// (a misspelt `POSTGRES_PASSWROD` would otherwise be ignored without a word).
/// Kubernetes helpers referenced as `$(NAME)` by other variables count as read.
#[test]
fn every_variable_handed_to_a_connector_is_read() {
    let scratch = tempfile::tempdir().unwrap();
    let launches = all_launches(scratch.path());
    let helpers: Vec<String> = manifests()
        .iter()
        .flat_map(|(_, d)| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["env"].as_array().into_iter().flatten())
                .filter_map(|v| v["value"].as_str())
                .filter_map(|v| v.strip_prefix("$(")?.strip_suffix(')'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut checked = 0;
    for launch in launches.iter().filter(|l| !l.env.is_empty()) {
        let (section, keys) = overridable_keys(launch);
        for var in launch.env.keys() {
            let read = HOST_VARIABLES.contains(&var.as_str())
                || helpers.contains(var)
                || keys
                    .iter()
                    .any(|k| format!("{section}_{k}").to_uppercase() == *var);
            assert!(
                read,
                "{}: nothing reads {var}: the host reads {HOST_VARIABLES:?}, the connector {}",
                launch.origin,
                keys.iter()
                    .map(|k| format!("{section}_{k}").to_uppercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} variables checked");
}

/// The broker treats two consumers of one name on one subscription as one
/// consumer reconnecting, so replicas of a sink must run under names of their
/// own: compose services that share a configuration differ in CONNECTOR_NAME,
/// and a Kubernetes workload with replicas takes it from the pod's name.
#[test]
fn replicas_of_one_connector_run_under_names_of_their_own() {
    let scratch = tempfile::tempdir().unwrap();
    let launches = all_launches(scratch.path());
    let mut by_config: BTreeMap<(String, PathBuf), Vec<&Launch>> = BTreeMap::new();
    for launch in launches
        .iter()
        .filter(|l| l.origin.starts_with("compose.yaml"))
    {
        assert_eq!(
            launch.replicas, 1,
            "{}: deploy.replicas share one connector name",
            launch.origin
        );
        let config = flag_value(&launch.args, "--config").unwrap();
        by_config
            .entry((config.to_string(), launch.files[config].clone()))
            .or_default()
            .push(launch);
    }
    let shared: Vec<_> = by_config.values().filter(|l| l.len() > 1).collect();
    assert!(
        !shared.is_empty(),
        "compose.yaml shows no sink scaled by replicas"
    );
    for group in shared {
        let mut names: Vec<String> = group.iter().map(|l| connector_name(l)).collect();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            group.len(),
            "replicas share a connector name: {names:?}"
        );
    }
    for (file, doc) in manifests() {
        let replicas = doc["spec"]["replicas"].as_u64().unwrap_or(1);
        if doc["kind"] != "Deployment" || replicas < 2 {
            continue;
        }
        let containers = doc["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        for container in containers {
            let from_pod_name = container["env"].as_array().into_iter().flatten().any(|v| {
                v["name"] == "CONNECTOR_NAME"
                    && v["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            });
            assert!(
                from_pod_name,
                "k8s/{file}: {replicas} replicas without CONNECTOR_NAME from the pod's name"
            );
        }
    }
}

/// The compose connectors' `[sandbox] allow` grants the compose network's
/// fixed subnet, so the guests reach their systems wherever they land.
#[test]
fn compose_sandboxes_allow_the_compose_network() {
    let config = compose_config();
    let networks = config["networks"].as_object().unwrap();
    let subnets: Vec<&str> = networks
        .values()
        .flat_map(|n| n["ipam"]["config"].as_array().into_iter().flatten())
        .filter_map(|c| c["subnet"].as_str())
        .collect();
    assert!(
        !subnets.is_empty(),
        "compose.yaml: no network with a fixed subnet"
    );
    let mut checked = 0;
    for launch in compose_launches(&config) {
        let config = flag_value(&launch.args, "--config").unwrap();
        let table: toml::Table = read(&launch.files[config]).parse().unwrap();
        let allow = table["sandbox"]["allow"]
            .as_array()
            .expect("[sandbox] allow");
        for entry in allow {
            let entry = entry.as_str().unwrap();
            let (network, _port) = entry.rsplit_once(':').unwrap();
            assert!(
                subnets.contains(&network),
                "{}: [sandbox] allow {entry} is not on the compose network {subnets:?}",
                launch.origin
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} allow entries checked");
}

/// The image's connector build step, run here as the Dockerfile has it:
/// it builds for wasm32-wasip2 every connector of the workspace (so a
/// native crate added to the workspace must be excluded there).
#[test]
fn dockerfile_builds_every_connector_of_the_workspace() {
    let dockerfile = read(&docker_dir().join("Dockerfile"));
    let step = instructions(&dockerfile)
        .into_iter()
        .filter(|(keyword, _)| keyword == "RUN")
        .flat_map(|(_, run)| {
            run.split("&&")
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        })
        .find(|c| c.starts_with("cargo build") && c.contains("wasm32-wasip2"))
        .expect("docker/Dockerfile builds the connectors with cargo");
    let args: Vec<&str> = step.split_whitespace().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    succeeds(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(&args)
            .current_dir(&root),
    );
    // A connector is a cdylib; connectors-wasm also holds their libraries.
    let connectors: Vec<String> = std::fs::read_dir(root.join("connectors-wasm"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("Cargo.toml")).is_ok_and(|t| t.contains("cdylib"))
        })
        .map(|e| e.file_name().to_string_lossy().replace('-', "_"))
        .collect();
    assert!(connectors.len() >= 3, "connectors: {connectors:?}");
    for connector in connectors {
        let wasm = target_dir()
            .join("wasm32-wasip2/release")
            .join(format!("{connector}.wasm"));
        assert!(wasm.exists(), "`{step}` does not build {}", wasm.display());
    }
}

// ---------------------------------------------------------------------------
// The linters.

#[test]
fn dockerfiles_pass_hadolint() {
    let docker = docker_dir();
    succeeds(
        Command::new(tool("hadolint"))
            .args([
                "--config",
                ".hadolint.yaml",
                "Dockerfile",
                "connector.Dockerfile",
            ])
            .current_dir(&docker),
    );
}

/// `docker compose config` accepts the file with .env.example and refuses it
/// without the secrets, naming the missing one: no password has a default.
#[test]
fn compose_file_is_valid_and_its_secrets_are_required() {
    let docker = docker_dir();
    let compose = |env_file: &Path| {
        Command::new(tool("docker-compose"))
            .arg("--env-file")
            .arg(env_file)
            .args(["-f", "compose.yaml", "--profile", "*", "config", "--quiet"])
            .current_dir(&docker)
            .env_clear()
            .output()
            .unwrap()
    };
    let good = compose(&docker.join(".env.example"));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let example = read(&docker.join(".env.example"));
    for secret in ["MQTT_PASSWORD", "POSTGRES_PASSWORD", "CLICKHOUSE_PASSWORD"] {
        let without: String = example
            .lines()
            .filter(|l| !l.starts_with(&format!("{secret}=")))
            .map(|l| format!("{l}\n"))
            .collect();
        let env_file = dir.path().join(format!("without-{secret}"));
        std::fs::write(&env_file, without).unwrap();
        let out = compose(&env_file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(secret),
            "compose.yaml runs without {secret}: {stderr}"
        );
    }
}

#[test]
fn kubernetes_manifests_match_the_schemas() {
    let docker = docker_dir();
    let out = succeeds(
        Command::new(tool("kubernetes-validate"))
            .args([
                "--strict",
                "mqtt-source.yaml",
                "postgres-sink.yaml",
                "secret.yaml",
            ])
            .current_dir(docker.join("k8s")),
    );
    // One line per resource: two ConfigMaps, a Service, a StatefulSet, a
    // Deployment and a Secret.
    assert_eq!(out.matches(" passed for resource ").count(), 6, "{out}");
    let listed = std::fs::read_dir(docker.join("k8s")).unwrap().count();
    assert_eq!(listed, 3, "a manifest in docker/k8s is not validated here");
}

// ---------------------------------------------------------------------------
// The image's entrypoint, as a container runs it.

/// Runs datagen-source to `topic` as PID 1 of a new PID namespace, behind
/// `init` (the image's init, or nothing); returns the child and its log file.
fn datagen_as_pid_1(
    broker: &danube_testkit::TestBroker,
    dir: &Path,
    name: &str,
    topic: &str,
    init: &[String],
) -> (std::process::Child, PathBuf) {
    let config = write_config(
        dir,
        "datagen.toml",
        &broker.url(),
        name,
        &format!("[datagen]\ntopics = [\"{topic}\"]\nrate = 200\n"),
    );
    let log = dir.join("host.log");
    let child = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--kill-child",
        ])
        .args(init)
        .arg(host_bin())
        .args(["--log-format", "text", "--module"])
        .arg(guest("datagen-source"))
        .arg("--config")
        .arg(&config)
        .env("XDG_CACHE_HOME", target_dir().join("test-module-cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("unshare runs");
    (child, log)
}

/// A connector started the way the image starts it (the ENTRYPOINT's init,
/// then danube-host) as PID 1 of a new PID namespace: it becomes ready,
/// the image's health check (docker/healthcheck.sh) sees it, records flow,
/// and SIGTERM to the init drains it to exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_entrypoint_runs_a_connector_as_pid_1_and_drains_on_sigterm() {
    let broker = danube_testkit::TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = "/default/entrypoint";
    // What the ENTRYPOINT runs before danube-host (found on PATH, as there).
    let (init, _) = host_entrypoint();
    let (mut child, log) = datagen_as_pid_1(&broker, dir.path(), "entrypoint", topic, &init);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    let port = {
        let mut port = None;
        wait_until(Duration::from_secs(30), || {
            port = log_text()
                .lines()
                .find(|l| l.contains("serving /metrics"))
                .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
                .and_then(|a| a.rsplit_once(':').map(|(_, p)| p.to_string()));
            port.is_some()
        });
        port.unwrap_or_else(|| panic!("the host did not serve its endpoints; log:\n{}", log_text()))
    };
    let healthcheck = |path: &str, port: &str| {
        Command::new(docker_dir().join("healthcheck.sh"))
            .args([path, port])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(
        wait_until(Duration::from_secs(30), || healthcheck("/ready", &port)),
        "the health check never saw /ready; log:\n{}",
        log_text()
    );
    assert!(healthcheck("/health", &port));
    assert!(
        !healthcheck("/no-such-endpoint", &port),
        "a 404 passed the health check"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    assert!(
        !healthcheck("/health", &closed_port),
        "a closed port passed the health check"
    );
    assert!(
        broker
            .wait_for(Duration::from_secs(30), |b| b.messages(topic).len() >= 20)
            .await,
        "no records reached the broker; log:\n{}",
        log_text()
    );

    // The init is unshare's only child: PID 1 inside, an ordinary pid here.
    let init_pid = common::worker_pid(child.id() as i32).expect("the init runs");
    // SAFETY: kill(2) on a process this test started (through unshare).
    unsafe { libc::kill(init_pid, libc::SIGTERM) };
    let mut status = None;
    wait_until(Duration::from_secs(30), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        panic!("no exit within 30 s of SIGTERM; log:\n{}", log_text());
    };
    assert!(
        status.success(),
        "exit {status} after SIGTERM; log:\n{}",
        log_text()
    );
}

/// Without an init, danube-host itself as PID 1 (as `docker run --entrypoint
/// danube-host` would run it): its workers still start and records flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn danube_host_runs_as_pid_1_without_an_init() {
    let broker = danube_testkit::TestBroker::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = "/default/pid-one";
    let (mut child, log) = datagen_as_pid_1(&broker, dir.path(), "pid-one", topic, &[]);
    let flowed = broker
        .wait_for(Duration::from_secs(30), |b| b.messages(topic).len() >= 20)
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        flowed,
        "no records reached the broker from a host running as PID 1; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
