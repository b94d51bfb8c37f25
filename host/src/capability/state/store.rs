//! The connector's persisted state store (the `state` import).
//!
//! A small map saved as one JSON file, replaced atomically (write, fsync,
//! rename) on every change, so a crash leaves either the old or the new map.
//! Values that are printable UTF-8 text are stored as JSON strings, so that
//! operators can read them; other values as `{"base64": "..."}` (a third
//! larger than the bytes, where JSON arrays of numbers took four times).
//! Files holding such arrays, as earlier versions wrote them, still load.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct StateStore {
    /// `None` for a store that lives only in memory (`inspect`, `validate`).
    path: Option<PathBuf>,
    entries: BTreeMap<String, Vec<u8>>,
}

impl StateStore {
    /// Opens the store at `path`; a missing file is an empty store.
    pub fn open(path: &Path) -> anyhow::Result<StateStore> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => StateStore::parse(&bytes).with_context(|| {
                format!(
                    "the state file {} is corrupt; restore it from a backup or delete it to start the connector from scratch",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(StateStore {
            path: Some(path.to_path_buf()),
            entries,
        })
    }

    /// The entries of a state file's text (as `open` reads it, and as the
    /// management API takes a replacement).
    pub fn parse(bytes: &[u8]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        serde_json::from_slice::<BTreeMap<String, StoredValue>>(bytes)?
            .into_iter()
            .map(|(k, v)| Ok((k, v.into_bytes()?)))
            .collect()
    }

    /// Replaces the state file at `path` with `entries` (the management
    /// API's offset reset, while no worker has the store open).
    pub fn replace(path: &Path, entries: BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
        StateStore {
            path: Some(path.to_path_buf()),
            entries,
        }
        .save()
    }

    /// A store that is never written to disk.
    pub fn in_memory() -> StateStore {
        StateStore {
            path: None,
            entries: BTreeMap::new(),
        }
    }

    pub fn entries(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.entries
    }

    /// Sets (`Some`) or removes (`None`) a key and persists the store.
    pub fn apply(&mut self, key: String, value: Option<Vec<u8>>) -> anyhow::Result<()> {
        match value {
            Some(v) => self.entries.insert(key, v),
            None => self.entries.remove(&key),
        };
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let readable: BTreeMap<&String, StoredValue> = self
            .entries
            .iter()
            .map(|(k, v)| (k, StoredValue::from_bytes(v)))
            .collect();
        file.write_all(&serde_json::to_vec(&readable)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }
}

/// One value as written to the file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum StoredValue {
    Text(String),
    Base64 {
        base64: String,
    },
    /// As earlier versions wrote bytes; read, never written.
    Bytes(Vec<u8>),
}

impl StoredValue {
    fn from_bytes(bytes: &[u8]) -> StoredValue {
        use base64::Engine;
        match std::str::from_utf8(bytes) {
            // Control characters would come out as six-byte escapes.
            Ok(text)
                if !text
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t') =>
            {
                StoredValue::Text(text.to_string())
            }
            _ => StoredValue::Base64 {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }

    fn into_bytes(self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine;
        Ok(match self {
            StoredValue::Text(text) => text.into_bytes(),
            StoredValue::Base64 { base64 } => {
                base64::engine::general_purpose::STANDARD.decode(base64)?
            }
            StoredValue::Bytes(bytes) => bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/c.state.json");
        let mut store = StateStore::open(&path).unwrap();
        store.apply("seq".into(), Some(b"42".to_vec())).unwrap();
        store.apply("binary".into(), Some(vec![0xff, 0])).unwrap();
        store.apply("gone".into(), Some(vec![1])).unwrap();
        store.apply("gone".into(), None).unwrap();
        let back = StateStore::open(&path).unwrap();
        assert_eq!(
            back.entries().get("seq").map(Vec::as_slice),
            Some(&b"42"[..])
        );
        assert_eq!(
            back.entries().get("binary").map(Vec::as_slice),
            Some(&[0xff, 0][..])
        );
        assert!(!back.entries().contains_key("gone"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""seq":"42""#),
            "text values stay readable: {text}"
        );
        assert!(text.contains(r#""binary":{"base64":"/wA="}"#), "{text}");
    }

    #[test]
    fn binary_values_take_a_third_more_than_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.state.json");
        let mut store = StateStore::open(&path).unwrap();
        let value: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
        store.apply("blob".into(), Some(value.clone())).unwrap();
        let size = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(size < value.len() * 14 / 10, "{size} bytes on disk");
        assert_eq!(StateStore::open(&path).unwrap().entries()["blob"], value);
    }

    #[test]
    fn files_of_earlier_versions_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.state.json");
        std::fs::write(&path, br#"{"seq":"42","binary":[255,0]}"#).unwrap();
        let store = StateStore::open(&path).unwrap();
        assert_eq!(store.entries()["binary"], vec![255, 0]);
    }

    #[test]
    fn corrupt_file_is_reported_with_a_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.state.json");
        std::fs::write(&path, b"{not json").unwrap();
        let e = StateStore::open(&path).err().unwrap();
        assert!(format!("{e:#}").contains("is corrupt"));
    }
}
