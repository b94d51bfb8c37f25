//! Driving the probe fixtures (host/tests/probe and host/tests/probe-source)
//! and counting what they wrote.

use std::path::{Path, PathBuf};

use danube_testkit::TestBroker;

use super::{Host, guest, reliable_producer, wait_subscribed, write_config};

/// A broker URL nothing listens on, for faults that end the host before it
/// talks to Danube.
pub fn unused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

/// The host's final report: the last line starting with `danube-host: `.
pub fn final_report(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| l.starts_with("danube-host: "))
        .unwrap_or_else(|| panic!("no `danube-host: ` line in the log:\n{log}"))
}

/// A probe sink subscribed to `topic`, writing each record it accepts as a
/// JSON line to a file in its granted directory.
pub struct ProbeSink {
    pub host: Host,
    pub out_file: PathBuf,
    pub log_file: PathBuf,
}

impl ProbeSink {
    /// Starts the probe as connector `name` in `dir`; `tables` go before its
    /// `[sandbox]` table, `sandbox` and `probe` into those tables. Returns
    /// once it subscribed.
    pub async fn start(
        broker: &TestBroker,
        dir: &Path,
        name: &str,
        topic: &str,
        [tables, sandbox, probe]: [&str; 3],
    ) -> ProbeSink {
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let out_file = out.join("probe.jsonl");
        let config = write_config(
            dir,
            "probe.toml",
            &broker.url(),
            name,
            &format!(
                "{tables}\n\n[sandbox]\ndirs = [\"{out}\"]\n{sandbox}\n\n[probe]\ntopic = \"{topic}\"\nwrite_to = \"{file}\"\n{probe}\n",
                out = out.display(),
                file = out_file.display()
            ),
        );
        let host = Host::start(&guest("probe-connector"), &config, &[]);
        wait_subscribed(broker, &[topic.to_string()], "probe", &host).await;
        ProbeSink {
            host,
            out_file,
            log_file: config.with_extension("log"),
        }
    }

    /// The `i` of each record written, in the order written.
    pub fn written(&self) -> Vec<u64> {
        std::fs::read_to_string(&self.out_file)
            .unwrap_or_default()
            .lines()
            .map(|l| number(l.as_bytes()))
            .collect()
    }
}

/// Sends `count` JSON records `{"i": N, "poison": N in poisons}`.
pub async fn produce(broker: &TestBroker, topic: &str, count: u64, poisons: &[u64]) {
    let producer = reliable_producer(&broker.url(), topic).await;
    for i in 0..count {
        let payload = serde_json::json!({ "i": i, "poison": poisons.contains(&i) });
        producer
            .send(payload.to_string().into_bytes(), None)
            .await
            .unwrap();
    }
}

/// The `i` of each record on a topic (a dead-letter topic, say).
pub fn numbers_on(broker: &TestBroker, topic: &str) -> Vec<u64> {
    broker
        .messages(topic)
        .iter()
        .map(|m| number(&m.payload))
        .collect()
}

fn number(json: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    v["i"].as_u64().unwrap()
}
