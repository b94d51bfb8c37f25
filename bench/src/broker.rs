//! The broker the bench talks to: `danube-testkit` started as a process of
//! its own (so it does not share the bench's runtime), or any Danube by URL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

pub struct Broker {
    pub url: String,
    /// The test broker this bench started, stopped on drop.
    testkit: Option<Child>,
}

impl Broker {
    pub fn external(url: String) -> Broker {
        Broker { url, testkit: None }
    }

    /// Starts `danube-testkit` on a free loopback port; it prints its URL.
    pub fn testkit(binary: &Path) -> anyhow::Result<Broker> {
        let mut child = Command::new(binary)
            .args(["--port", "0"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("no stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line.trim().to_string();
        if !url.starts_with("http") {
            let _ = child.kill();
            bail!("danube-testkit did not print its URL (got {line:?})");
        }
        Ok(Broker {
            url,
            testkit: Some(child),
        })
    }

    pub fn describe(&self) -> String {
        match self.testkit {
            Some(_) => format!(
                "danube-testkit (in-memory test broker, its own process on this machine) at {}",
                self.url
            ),
            None => format!("Danube at {}", self.url),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.testkit {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
