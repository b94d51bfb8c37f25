//! Building the Python, JavaScript and C examples (`examples/<lang>`) with
//! their Makefiles and the toolchains `scripts/setup-polyglot.sh` installs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `PATH` with the polyglot toolchains (`.polyglot/bin`) in front.
pub fn toolchain_path() -> std::ffi::OsString {
    let mut dirs = vec![repo_root().join(".polyglot/bin")];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

/// Runs `make TARGET` in `dir` with the toolchains on `PATH`; panics with
/// make's output on failure.
pub fn make(dir: &Path, target: &str) {
    let out = Command::new("make")
        .arg(target)
        .current_dir(dir)
        .env("PATH", toolchain_path())
        .output()
        .expect("make runs");
    assert!(
        out.status.success(),
        "`make {target}` in {} failed:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds `examples/<lang>` (make does nothing when it is up to date, as
/// after `scripts/build.sh`) and returns its component `build/<name>.wasm`.
pub fn example(lang: &str, name: &str) -> PathBuf {
    let dir = repo_root().join("examples").join(lang);
    let wasm = format!("build/{name}.wasm");
    make(&dir, &wasm);
    dir.join(wasm)
}
