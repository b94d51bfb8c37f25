//! `[sandbox] dirs`: the host directories a guest may read and write, seen at
//! the same paths inside it.
//!
//! A grant must not reach the host's own files. The compiled-module cache
//! holds native code the worker loads without checks, the state directory
//! other connectors' checkpoints, the module and configuration files what
//! runs next and with which grants, the `danube-host` binary itself: a guest
//! that could write any of them could run its code as another connector, or
//! outside the sandbox. So a grant that contains one of them, or lies inside
//! one of the directories, is refused before any worker starts. The worker
//! grants what is left through WASI ([`grant`]) and Landlock
//! (`worker/hardening.rs`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::config::ConnectorConfig;

/// Opens each granted directory to the guest, read and write, at its own
/// path.
pub fn grant(builder: &mut WasiCtxBuilder, dirs: &[PathBuf]) -> anyhow::Result<()> {
    for dir in dirs {
        let guest_path = dir.to_string_lossy();
        builder
            .preopened_dir(dir, guest_path.as_ref(), FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "cannot grant directory {} ([sandbox] dirs): does it exist?",
                    dir.display()
                )
            })?;
    }
    Ok(())
}

/// The paths no grant may reach, with what each is (for the message).
pub struct Protected {
    paths: Vec<(PathBuf, &'static str, Kind)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Refused when a grant contains it.
    File,
    /// Refused when a grant contains it or lies inside it.
    Dir,
}

impl Protected {
    /// The host's files for one connector.
    pub fn of_connector(config: &ConnectorConfig, module: &Path, cache_dir: Option<&Path>) -> Self {
        let mut paths = vec![
            (config.path.clone(), "its configuration file", Kind::File),
            (module.to_path_buf(), "the module it runs", Kind::File),
            (
                config.host.state.dir.clone(),
                "the state directory ([state] dir)",
                Kind::Dir,
            ),
        ];
        if let Some(cache) = cache_dir {
            paths.push((
                cache.to_path_buf(),
                "the compiled-module cache ([sandbox] cache_dir)",
                Kind::Dir,
            ));
        }
        if let Ok(exe) = std::env::current_exe() {
            paths.push((exe, "the danube-host binary", Kind::File));
        }
        Protected {
            paths: paths
                .into_iter()
                .map(|(p, what, kind)| (resolved(&p), what, kind))
                .collect(),
        }
    }

    /// Why `grant` may not be given, if it may not.
    fn conflict(&self, grant: &Path) -> Option<String> {
        self.paths.iter().find_map(|(path, what, kind)| {
            if path.starts_with(grant) {
                Some(format!("it contains {what}, {}", path.display()))
            } else if *kind == Kind::Dir && grant.starts_with(path) {
                Some(format!("it lies inside {what}, {}", path.display()))
            } else {
                None
            }
        })
    }
}

/// The granted directories, created if missing and resolved (symlinks
/// followed), or why one cannot be granted.
pub fn grants(dirs: &[PathBuf], protected: &Protected) -> anyhow::Result<Vec<PathBuf>> {
    let mut granted = Vec::with_capacity(dirs.len());
    for dir in dirs {
        std::fs::create_dir_all(dir).ok();
        let resolved = std::fs::canonicalize(dir)
            .map_err(|e| anyhow::anyhow!("[sandbox] dirs: cannot grant {}: {e}", dir.display()))?;
        if let Some(why) = protected.conflict(&resolved) {
            anyhow::bail!(
                "[sandbox] dirs: {} cannot be granted: {why}, which a guest must not be able to change; grant a directory of the connector's own",
                dir.display()
            );
        }
        granted.push(resolved);
    }
    Ok(granted)
}

/// `path` with symlinks followed where it exists, else made absolute, so
/// that it compares with the resolved grants.
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protected(root: &Path) -> Protected {
        Protected {
            paths: vec![
                (
                    root.join("conf/c.toml"),
                    "its configuration file",
                    Kind::File,
                ),
                (root.join("cache"), "the compiled-module cache", Kind::Dir),
            ],
        }
    }

    #[test]
    fn grants_reaching_the_hosts_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let p = protected(&root);
        let refused = |d: &Path| grants(&[d.to_path_buf()], &p).unwrap_err().to_string();
        assert!(refused(&root).contains("contains its configuration file"));
        assert!(refused(&root.join("conf")).contains("contains its configuration file"));
        assert!(refused(&root.join("cache")).contains("contains the compiled-module cache"));
        assert!(refused(&root.join("cache/x")).contains("lies inside the compiled-module cache"));
        let out = root.join("out");
        assert_eq!(grants(std::slice::from_ref(&out), &p).unwrap(), vec![out]);
        // A symlink to the cache is the cache.
        std::os::unix::fs::symlink(root.join("cache"), root.join("link")).unwrap();
        assert!(refused(&root.join("link")).contains("compiled-module cache"));
    }
}
