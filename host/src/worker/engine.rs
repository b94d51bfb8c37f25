//! The wasmtime engine and the cache of compiled modules.
//!
//! Compiling a component costs ~100 ms for a small Rust guest and seconds for
//! Python or JavaScript ones; loading a precompiled artifact costs under a
//! millisecond. Artifacts are cached on disk under a key made of the module's
//! hash and the engine's compatibility hash, so a changed module, a changed
//! engine setting or a new wasmtime never loads a stale artifact.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// One epoch tick. A call's time limit is counted in ticks, so a looping guest
/// is stopped within one tick of its limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The engine every worker uses. Settings here are part of the cache key, so
/// modules compiled with fuel metering are cached apart from those without.
pub fn new_engine(consume_fuel: bool) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.consume_fuel(consume_fuel);
    config.wasm_component_model(true);
    // Makes every component call 3-5x cheaper; the host calls guests
    // synchronously from a thread of their own.
    config.concurrency_support(false);
    config.epoch_interruption(true);
    // Compiling on a pool of threads would leave them running before the
    // lock-down, which confines only the threads started after it.
    config.parallel_compilation(false);
    Ok(Engine::new(&config)?)
}

/// Starts the thread that advances epochs for the life of the process. Call
/// it after the lock-down: Landlock confines the calling thread and those it
/// starts later, not threads already running.
pub fn start_epoch_ticker(engine: &Engine) -> anyhow::Result<()> {
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("epoch".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch thread")?;
    Ok(())
}

/// What the first bytes of a file say it is.
#[derive(Debug, PartialEq, Eq)]
pub enum WasmKind {
    Component,
    CoreModule,
    NotWasm,
}

/// Tells a component from a core module from anything else by its header.
pub fn wasm_kind(bytes: &[u8]) -> WasmKind {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 0x01, 0]) => WasmKind::Component,
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => WasmKind::CoreModule,
        _ => WasmKind::NotWasm,
    }
}

/// Loads a component, from the cache when an artifact for these exact bytes and
/// engine exists, else by compiling it (and caching the result).
pub fn load_component(
    engine: &Engine,
    module: &Path,
    cache_dir: Option<&Path>,
) -> anyhow::Result<Component> {
    let bytes = std::fs::read(module).context("cannot read it")?;
    match wasm_kind(&bytes) {
        WasmKind::Component => {}
        WasmKind::CoreModule => bail!(
            "it is a core WebAssembly module, not a component; build the connector for the wasm32-wasip2 target (cargo build --target wasm32-wasip2) or wrap it with `wasm-tools component new`"
        ),
        WasmKind::NotWasm => {
            bail!("it is not a WebAssembly file (no wasm header); pass the connector's .wasm")
        }
    }
    let Some(cache_dir) = cache_dir else {
        return compile(engine, &bytes);
    };
    let artifact = artifact_path(engine, &bytes, cache_dir);
    let key = match cache_key(cache_dir) {
        Ok(key) => key,
        Err(e) => {
            tracing::warn!(dir = %cache_dir.display(), error = %format!("{e:#}"), "cannot use the compiled-module cache; compiling");
            return compile(engine, &bytes);
        }
    };
    if let Ok(stored) = std::fs::read(&artifact) {
        match authenticated(&key, &artifact, &stored) {
            // SAFETY: the artifact carries this host's MAC over its name (the
            // module's hash and the engine's compatibility hash) and its
            // bytes, so it is what `Component::serialize` wrote for exactly
            // this module and engine.
            Some(native) => match unsafe { Component::deserialize(engine, native) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(artifact = %artifact.display(), error = %e, "discarding unreadable cached artifact");
                }
            },
            None => {
                tracing::warn!(artifact = %artifact.display(), "discarding a cached artifact that fails its authentication (changed outside danube-host, or written by an older one); compiling again");
            }
        }
        let _ = std::fs::remove_file(&artifact);
    }
    let component = compile(engine, &bytes)?;
    if let Err(e) = store_artifact(&component, &key, &artifact) {
        tracing::warn!(dir = %cache_dir.display(), error = %e, "cannot cache the compiled module; the next start compiles again");
    }
    Ok(component)
}

fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Component> {
    Component::new(engine, bytes).map_err(|e| {
        anyhow::anyhow!(
            "it is not a valid component (truncated or corrupt?): {}",
            first_line(&e.to_string())
        )
    })
}

/// The first line of an error text: wasmtime's errors carry backtraces below.
pub(super) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// `<cache>/<sha256 of module>-<engine hash>.cwasm`
pub fn artifact_path(engine: &Engine, bytes: &[u8], cache_dir: &Path) -> PathBuf {
    let module_hash = hex(&Sha256::digest(bytes));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    cache_dir.join(format!("{module_hash}-{:016x}.cwasm", hasher.finish()))
}

/// Written to a temporary name and renamed, so a reader never sees half a file.
fn store_artifact(component: &Component, key: &CacheKey, artifact: &Path) -> anyhow::Result<()> {
    let dir = artifact
        .parent()
        .context("artifact path has no directory")?;
    let native = component.serialize()?;
    let mut bytes = Vec::with_capacity(MAC_LEN + native.len());
    bytes.extend_from_slice(mac(key, artifact, &native).as_bytes());
    bytes.extend_from_slice(&native);
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, artifact)?;
    Ok(())
}

/// Cached artifacts are native code, loaded without checks: one that anything
/// but this host wrote (a guest granted the directory, another connector's
/// entry copied over this one's) would run as this connector. So each file
/// starts with a MAC, keyed with a secret of this cache's (`key`, readable by
/// its owner alone, in a directory no `[sandbox] dirs` grant may reach), over
/// the file's name and the artifact.
type CacheKey = [u8; 32];
const MAC_LEN: usize = blake3::OUT_LEN;

fn mac(key: &CacheKey, artifact: &Path, native: &[u8]) -> blake3::Hash {
    let name = artifact.file_name().unwrap_or_default().as_encoded_bytes();
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&(name.len() as u64).to_le_bytes());
    hasher.update(name);
    hasher.update(native);
    hasher.finalize()
}

/// The artifact inside a stored file, if its MAC holds.
fn authenticated<'a>(key: &CacheKey, artifact: &Path, stored: &'a [u8]) -> Option<&'a [u8]> {
    let (tag, native) = stored.split_at_checked(MAC_LEN)?;
    // `Hash` compares in constant time.
    (mac(key, artifact, native) == blake3::Hash::from_slice(tag).ok()?).then_some(native)
}

/// The cache's key, created on first use (mode 0600). Two workers creating
/// it at once agree: it is linked into place only if absent, then read.
fn cache_key(cache_dir: &Path) -> anyhow::Result<CacheKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = cache_dir.join("key");
    if !path.exists() {
        std::fs::create_dir_all(cache_dir)?;
        let tmp = cache_dir.join(format!(".key.{}.tmp", std::process::id()));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
            .write_all(&rand::random::<CacheKey>())?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(e).context("cannot create the cache key");
            }
            _ => {}
        }
    }
    let key = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    key.try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key; delete it", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default cache directory: `$XDG_CACHE_HOME/danube-host`, else
/// `~/.cache/danube-host`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("danube-host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_authenticates_under_its_own_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = cache_key(dir.path()).unwrap();
        assert_eq!(cache_key(dir.path()).unwrap(), key, "the key is kept");
        let (a, b) = (dir.path().join("a.cwasm"), dir.path().join("b.cwasm"));
        let mut stored = mac(&key, &a, b"native").as_bytes().to_vec();
        stored.extend_from_slice(b"native");
        assert_eq!(authenticated(&key, &a, &stored), Some(&b"native"[..]));
        assert_eq!(authenticated(&key, &b, &stored), None, "copied over b");
        let mut changed = stored.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert_eq!(authenticated(&key, &a, &changed), None, "changed");
        assert_eq!(authenticated(&[7; 32], &a, &stored), None, "another key");
        assert_eq!(authenticated(&key, &a, &stored[..10]), None, "truncated");
    }

    #[test]
    fn headers_tell_components_from_modules() {
        assert_eq!(wasm_kind(b"\0asm\x0d\0\x01\0rest"), WasmKind::Component);
        assert_eq!(wasm_kind(b"\0asm\x01\0\0\0"), WasmKind::CoreModule);
        assert_eq!(wasm_kind(b"\x7fELF...."), WasmKind::NotWasm);
        assert_eq!(wasm_kind(b"\0as"), WasmKind::NotWasm);
    }
}
