//! `danube-host new`: a connector directory to start from, in Rust, Python,
//! JavaScript or C, with its configuration, a test and a README. It builds and
//! passes its test as generated.
//!
//! The Python, JavaScript and C templates are the examples in
//! `examples/<lang>`, embedded at build time together with the contract
//! (`wit/connect.wit`) and the language's SDK layer (`sdk/<lang>`), so what
//! `new` writes and the examples CI runs never drift apart. The examples refer
//! to the WIT and SDK as `../../wit` and `../../sdk/<lang>`; a new directory
//! carries its own copies at `wit/` and `sdk/<lang>/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

/// Which world a new connector implements.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum Kind {
    Source,
    Sink,
}

/// One template's files, as (path in the new directory, text), and the
/// name they use for the connector, which `new` replaces.
struct Template {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
}

macro_rules! repo_file {
    ($path:literal) => {
        ($path, include_str!(concat!("../../../", $path)))
    };
}

macro_rules! example_file {
    ($lang:literal, $file:literal) => {
        (
            $file,
            include_str!(concat!("../../../examples/", $lang, "/", $file)),
        )
    };
}

const GITIGNORE: (&str, &str) = (".gitignore", "/build\n");

const PYTHON: Template = Template {
    name: "json-filter-sink",
    files: &[
        example_file!("python", "app.py"),
        example_file!("python", "enrich.py"),
        example_file!("python", "test_enrich.py"),
        example_file!("python", "connector.toml"),
        example_file!("python", "Makefile"),
        example_file!("python", "README.md"),
        repo_file!("sdk/python/danube_connect.py"),
        repo_file!("wit/connect.wit"),
        GITIGNORE,
    ],
};

/// A Python source has no example of its own: its template lives here.
const PYTHON_SOURCE: Template = Template {
    name: "counter-source",
    files: &[
        ("app.py", include_str!("python-source/app.py")),
        ("counter.py", include_str!("python-source/counter.py")),
        (
            "test_counter.py",
            include_str!("python-source/test_counter.py"),
        ),
        (
            "connector.toml",
            include_str!("python-source/connector.toml"),
        ),
        ("Makefile", include_str!("python-source/Makefile")),
        ("README.md", include_str!("python-source/README.md")),
        repo_file!("sdk/python/danube_connect.py"),
        repo_file!("wit/connect.wit"),
        GITIGNORE,
    ],
};

const JS: Template = Template {
    name: "counter-source",
    files: &[
        example_file!("js", "app.js"),
        example_file!("js", "counter.js"),
        example_file!("js", "counter.test.js"),
        example_file!("js", "package.json"),
        example_file!("js", "connector.toml"),
        example_file!("js", "Makefile"),
        example_file!("js", "README.md"),
        repo_file!("sdk/js/danube-connect.js"),
        repo_file!("wit/connect.wit"),
        GITIGNORE,
    ],
};

const C: Template = Template {
    name: "line-sink",
    files: &[
        example_file!("c", "app.c"),
        example_file!("c", "line.c"),
        example_file!("c", "line.h"),
        example_file!("c", "test_line.c"),
        example_file!("c", "connector.toml"),
        example_file!("c", "Makefile"),
        example_file!("c", "README.md"),
        repo_file!("sdk/c/danube_connect.c"),
        repo_file!("sdk/c/danube_connect.h"),
        repo_file!("wit/connect.wit"),
        GITIGNORE,
    ],
};

/// A JavaScript sink has no example of its own: its template lives here.
const JS_SINK: Template = Template {
    name: "log-sink",
    files: &[
        ("app.js", include_str!("js-sink/app.js")),
        ("summary.js", include_str!("js-sink/summary.js")),
        ("summary.test.js", include_str!("js-sink/summary.test.js")),
        ("package.json", include_str!("js-sink/package.json")),
        ("connector.toml", include_str!("js-sink/connector.toml")),
        ("Makefile", include_str!("js-sink/Makefile")),
        ("README.md", include_str!("js-sink/README.md")),
        repo_file!("sdk/js/danube-connect.js"),
        repo_file!("wit/connect.wit"),
        GITIGNORE,
    ],
};

/// A C source has no example of its own: its template lives here.
const C_SOURCE: Template = Template {
    name: "counter-source",
    files: &[
        ("app.c", include_str!("c-source/app.c")),
        ("counter.c", include_str!("c-source/counter.c")),
        ("counter.h", include_str!("c-source/counter.h")),
        ("test_counter.c", include_str!("c-source/test_counter.c")),
        ("connector.toml", include_str!("c-source/connector.toml")),
        ("Makefile", include_str!("c-source/Makefile")),
        ("README.md", include_str!("c-source/README.md")),
        repo_file!("sdk/c/danube_connect.c"),
        repo_file!("sdk/c/danube_connect.h"),
        repo_file!("wit/connect.wit"),
        GITIGNORE,
    ],
};

/// The Rust templates depend on this repository's SDK by path.
const RUST_SOURCE: Template = Template {
    name: "counter-source",
    files: &[
        ("Cargo.toml", include_str!("rust/Cargo.toml.in")),
        ("src/lib.rs", include_str!("rust/lib.rs")),
        ("connector.toml", include_str!("rust/connector.toml")),
        ("README.md", include_str!("rust/README.md")),
        (".gitignore", "/target\n"),
    ],
};

const RUST_SINK: Template = Template {
    name: "lines-sink",
    files: &[
        ("Cargo.toml", include_str!("rust/Cargo.toml.in")),
        ("src/lib.rs", include_str!("rust-sink/lib.rs")),
        ("connector.toml", include_str!("rust-sink/connector.toml")),
        ("README.md", include_str!("rust-sink/README.md")),
        (".gitignore", "/target\n"),
    ],
};

impl Lang {
    /// The template of a `kind` of connector in this language.
    fn template(self, kind: Kind) -> &'static Template {
        match (self, kind) {
            (Lang::Rust, Kind::Source) => &RUST_SOURCE,
            (Lang::Rust, Kind::Sink) => &RUST_SINK,
            (Lang::Python, Kind::Source) => &PYTHON_SOURCE,
            (Lang::Python, Kind::Sink) => &PYTHON,
            (Lang::Js, Kind::Source) => &JS,
            (Lang::Js, Kind::Sink) => &JS_SINK,
            (Lang::C, Kind::Source) => &C_SOURCE,
            (Lang::C, Kind::Sink) => &C,
        }
    }

    /// What `new` makes without `--world`: the language's example.
    fn default_kind(self) -> Kind {
        match self {
            Lang::Rust | Lang::Js => Kind::Source,
            Lang::Python | Lang::C => Kind::Sink,
        }
    }
}

/// Writes a new connector named `name` in `lang` (a `kind` of connector,
/// else the language's default) into `parent/name` and returns that
/// directory. Refuses to touch an existing directory.
pub fn create(
    lang: Lang,
    kind: Option<Kind>,
    name: &str,
    parent: &Path,
) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let template = lang.template(kind.unwrap_or(lang.default_kind()));
    let dir = parent.join(name);
    if dir.exists() {
        bail!(
            "{} already exists; choose another name or directory",
            dir.display()
        );
    }
    for (path, text) in template.files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(&dir))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&file, render(text, template.name, name))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(dir)
}

/// The template's text for a connector called `name`: its own name in both
/// spellings (`my-sink`, `my_sink`) and the paths to the copies of the WIT and
/// SDK inside the new directory.
fn render(text: &str, template_name: &str, name: &str) -> String {
    let snake = |s: &str| s.replace('-', "_");
    text.replace(template_name, name)
        .replace(&snake(template_name), &snake(name))
        .replace("@NAME@", name)
        .replace("../../", "")
        .replace(
            "@SDK_PATH@",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk"),
        )
}

/// A name that works as a directory, a package, a module file and a
/// connector name: lowercase letters, digits and `-`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "`{name}` is not a usable connector name: use lowercase letters, digits and `-`, starting with a letter (e.g. `orders-sink`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("orders-sink2").is_ok());
        for bad in ["", "2sink", "Orders", "my_sink", "a/b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn render_renames_and_points_at_local_copies() {
        let text = "NAME := json_filter_sink\n-d ../../wit -p ../../sdk/python # json-filter-sink";
        assert_eq!(
            render(text, "json-filter-sink", "orders"),
            "NAME := orders\n-d wit -p sdk/python # orders"
        );
    }

    #[test]
    fn every_template_writes_its_files_and_refuses_an_existing_directory() {
        let parent = tempfile::tempdir().unwrap();
        for lang in Lang::value_variants() {
            for kind in Kind::value_variants() {
                let template = lang.template(*kind);
                let name = format!("my-{lang:?}-{kind:?}").to_lowercase();
                let dir = create(*lang, Some(*kind), &name, parent.path()).unwrap();
                for (path, _) in template.files {
                    let text = std::fs::read_to_string(dir.join(path)).unwrap();
                    assert!(!text.contains("../../"), "{path} points outside {name}");
                    assert!(
                        !text.contains(template.name),
                        "{path} keeps {}",
                        template.name
                    );
                    assert!(!text.contains("@NAME@"), "{path}");
                }
                // The configuration table is named after the connector too.
                let config = std::fs::read_to_string(dir.join("connector.toml")).unwrap();
                let table = format!("[{}]", name.replace('-', "_"));
                assert!(config.contains(&table), "{name}: no {table} in:\n{config}");
                assert!(create(*lang, Some(*kind), &name, parent.path()).is_err());
            }
        }
    }
}
