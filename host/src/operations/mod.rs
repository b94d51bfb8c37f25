//! Operating connectors while they run: the registry of the connectors a
//! host process runs, with what they are and their controls (pause,
//! restart), and the management API over it ([`api`]), served beside
//! `/metrics` when `--api` is given.
//!
//! The directory (in directory mode) decides which connectors run and with
//! which files; the API decides whether each is paused. The two never
//! contradict each other: a pause is kept beside the connector's state
//! store, so a connector whose files change is replaced and stays paused;
//! one whose files are removed stops, and if they come back it starts as it
//! was left (paused or not), as it starts from its state store.

pub mod api;
mod control;
mod redact;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

pub use control::{Control, Pause};

use crate::config::ConnectorConfig;

/// The connectors of one process. Clones share them.
#[derive(Clone, Default)]
pub struct Operations {
    members: Arc<Mutex<BTreeMap<String, Member>>>,
}

/// A running connector as the API shows it.
#[derive(Clone)]
struct Member {
    module: PathBuf,
    module_sha256: String,
    /// The configuration, secrets redacted.
    config: Json,
    loaded: Option<Loaded>,
    control: Control,
}

/// What the module said about itself once loaded.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded {
    pub world: String,
    pub guest: String,
    pub version: String,
}

/// The API token in `path` (`--api-token-file`, on the host and for `top`
/// and `tap`), without the surrounding whitespace a file's last line break
/// adds.
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|token| token.trim().to_string())
        .map_err(|e| format!("--api-token-file {}: {e}", path.display()))
}

impl Operations {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Member>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `config`'s connector (replacing one of the same name) and
    /// returns its controls.
    pub fn register(&self, module: &std::path::Path, config: &ConnectorConfig) -> Control {
        let control = Control::load(config);
        let module_sha256 = std::fs::read(module)
            .map(|bytes| format!("{:x}", Sha256::digest(&bytes)))
            .unwrap_or_default();
        let host = serde_json::to_value(&config.host).unwrap_or(Json::Null);
        let connector = serde_json::to_value(&config.connector).unwrap_or(Json::Null);
        let mut shown = serde_json::json!({ "host": host, "connector": connector });
        redact::secrets(&mut shown);
        self.lock().insert(
            config.host.connector_name.clone(),
            Member {
                module: module.to_path_buf(),
                module_sha256,
                config: shown,
                loaded: None,
                control: control.clone(),
            },
        );
        control
    }

    /// Records what connector `name`'s module is, once loaded.
    pub fn loaded(&self, name: &str, loaded: Loaded) {
        if let Some(member) = self.lock().get_mut(name) {
            member.loaded = Some(loaded);
        }
    }

    /// Drops a connector that no longer runs.
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    fn member(&self, name: &str) -> Option<Member> {
        self.lock().get(name).cloned()
    }

    /// Every connector, by name.
    fn members(&self) -> Vec<(String, Member)> {
        self.lock()
            .iter()
            .map(|(name, member)| (name.clone(), member.clone()))
            .collect()
    }
}
