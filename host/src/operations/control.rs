//! One connector's controls: paused or not, a restart asked for, a state
//! store to restart from. The management API changes them; the
//! connector's supervisor obeys.
//!
//! A pause is kept in a file beside the connector's state store
//! (`<state dir>/<name>.paused`), so it outlives the host: a connector
//! paused through the API starts paused again after a restart of the host,
//! or after its files changed in directory mode, until it is resumed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Notify, watch};

use crate::capability::state::StateStore;
use crate::config::ConnectorConfig;

/// What the pipelines see of a pause: whether to take work now, and a
/// wake-up when that changes.
#[derive(Clone)]
pub struct Pause(Option<watch::Receiver<bool>>);

impl Pause {
    /// A pause that never comes (tests, `danube-host dev`).
    pub fn never() -> Pause {
        Pause(None)
    }

    pub fn is_paused(&self) -> bool {
        self.0.as_ref().is_some_and(|r| *r.borrow())
    }

    /// Resolves when the pause is set or lifted; never when it cannot be.
    pub async fn changed(&mut self) {
        let changed = match &mut self.0 {
            Some(receiver) => receiver.changed().await.is_ok(),
            None => false,
        };
        if !changed {
            std::future::pending::<()>().await;
        }
    }
}

/// A state store's entries.
type StateEntries = BTreeMap<String, Vec<u8>>;

/// A connector's controls. Clones share them.
#[derive(Clone)]
pub struct Control {
    paused: Arc<watch::Sender<bool>>,
    restart: Arc<Notify>,
    pause_file: PathBuf,
    state_file: PathBuf,
    /// A state store to start from, written at the next restart, once the
    /// drain committed what it had to (see [`Control::reset_state`]).
    reset: Arc<Mutex<Option<StateEntries>>>,
}

impl Control {
    /// The controls of `config`'s connector, paused if its pause file says so.
    pub fn load(config: &ConnectorConfig) -> Control {
        let pause_file = config
            .host
            .state
            .dir
            .join(format!("{}.paused", config.host.connector_name));
        let (paused, _) = watch::channel(pause_file.exists());
        Control {
            paused: Arc::new(paused),
            restart: Arc::new(Notify::new()),
            pause_file,
            state_file: config.state_file(),
            reset: Arc::default(),
        }
    }

    pub fn pause(&self) -> Pause {
        Pause(Some(self.paused.subscribe()))
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Pauses (`true`) or resumes the connector, and keeps that on disk
    /// first: a pause that could not be kept is refused.
    pub fn set_paused(&self, paused: bool) -> std::io::Result<()> {
        if paused {
            if let Some(dir) = self.pause_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&self.pause_file, b"paused through the management API\n")?;
        } else {
            match std::fs::remove_file(&self.pause_file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.paused.send_replace(paused);
        Ok(())
    }

    /// The connector's state store file.
    pub fn state_file(&self) -> &std::path::Path {
        &self.state_file
    }

    /// Restarts the connector from `entries` as its state store (a
    /// source's position): it drains, commits, and only then is the store
    /// replaced, so the drain's last commit cannot overwrite the reset.
    pub fn reset_state(&self, entries: StateEntries) {
        *self.reset.lock().unwrap_or_else(PoisonError::into_inner) = Some(entries);
        self.restart();
    }

    /// Writes a state reset asked for, if any; between a drain and the next
    /// start.
    pub fn apply_reset(&self) -> anyhow::Result<()> {
        let reset = self
            .reset
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(entries) = reset {
            StateStore::replace(&self.state_file, entries)?;
            tracing::info!(file = %self.state_file.display(), "state store replaced through the management API");
        }
        Ok(())
    }

    /// Asks the supervisor to drain the connector and start it again.
    pub fn restart(&self) {
        self.restart.notify_one();
    }

    /// Resolves when a restart is asked for.
    pub async fn restart_asked(&self) {
        self.restart.notified().await
    }
}
