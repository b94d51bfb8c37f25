//! A connector's own configuration table as the host knows it: its keys,
//! the type and documentation of each, and the rules its values follow.
//!
//! It comes from the JSON Schema the module exports (`configuration.schema`
//! in the WIT; the Rust SDK derives it from the connector's `Config` type).
//! For a module built before that export existed, or one that gives none,
//! it comes from the example the module describes itself with, as before:
//! the keys the example shows (commented out or not), typed by their
//! example values.
//!
//! What it decides: which keys `validate` and directory mode accept (with
//! a hint for a near miss), whether the values fit the schema (checked
//! before the guest sees the table; errors never quote a value, which may
//! be a secret), which `SECTION_KEY` environment
//! variables may set a key and whether their value is taken as text, and
//! the key list `inspect` prints.
//!
//! The schema is the guest's, so untrusted: it is bounded before it gets
//! here ([`guest_text::CONFIG_SCHEMA`]), its `pattern`s run on a linear-time
//! regex engine, it cannot fetch anything (no remote `$ref`), and what it
//! says is bounded again before it is printed.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::contract::ModuleInfo;
use crate::guest_text::{self, one_line};

/// How many schema violations one error names.
const MAX_VIOLATIONS: usize = 5;

pub struct ConnectorTable {
    keys: BTreeMap<String, Key>,
    /// Whether a key not in `keys` is an error.
    closed: bool,
    /// The schema's rules; `None` for a module that gives no schema.
    validator: Option<jsonschema::Validator>,
}

/// One key of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Its JSON Schema types (`integer`, `string`, ...); empty when unknown.
    types: Vec<String>,
    /// One line of documentation, from the schema's `description`.
    description: Option<String>,
    /// Whether `SECTION_KEY` may set it (every key of a schema; only the
    /// keys an example sets outright, since a comment is no declaration).
    from_env: bool,
}

impl Key {
    /// Whether a value from the environment is taken as it is (a password
    /// `123456` stays text) rather than read as TOML.
    pub fn takes_text(&self) -> bool {
        self.types.iter().any(|t| t == "string")
    }
}

impl ConnectorTable {
    /// What `info` says of the table: its schema, or else its example.
    pub fn of(info: &ModuleInfo) -> Result<ConnectorTable, String> {
        match &info.config_schema {
            Some(schema) => ConnectorTable::from_schema(schema)
                .map_err(|e| format!("the module's configuration schema is unusable ({e}); report it to the connector's authors")),
            None => Ok(ConnectorTable::from_example(&info.config_example)),
        }
    }

    /// The table a JSON Schema describes.
    pub fn from_schema(text: &str) -> Result<ConnectorTable, String> {
        let schema: Json = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let validator = jsonschema::options()
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(&schema)
            .map_err(|e| one_line(format!("not a valid JSON Schema: {e}"), guest_text::MESSAGE))?;
        // A `properties` that is not an object failed the meta-schema above.
        let properties = match schema.get("properties") {
            Some(Json::Object(properties)) => properties,
            _ => &serde_json::Map::new(),
        };
        let keys = properties
            .iter()
            .map(|(name, property)| {
                let key = Key {
                    types: types_of(property, &schema),
                    description: property
                        .get("description")
                        .and_then(Json::as_str)
                        // Doc comments arrive with their line breaks.
                        .map(|d| {
                            one_line(
                                d.split_whitespace().collect::<Vec<_>>().join(" "),
                                guest_text::VALUE,
                            )
                        }),
                    from_env: true,
                };
                (one_line(name.clone(), guest_text::NAME), key)
            })
            .collect();
        Ok(ConnectorTable {
            keys,
            closed: schema.get("additionalProperties") == Some(&Json::Bool(false)),
            validator: Some(validator),
        })
    }

    /// The table an example shows (for modules without a schema).
    pub fn from_example(example: &str) -> ConnectorTable {
        let declared = declared_example(example);
        let keys: BTreeMap<String, Key> = documented_example(example)
            .into_iter()
            .map(|(name, value)| {
                let key = Key {
                    types: vec![toml_type(&value).into()],
                    description: None,
                    from_env: declared.contains_key(&name),
                };
                (name, key)
            })
            .collect();
        ConnectorTable {
            // An example that shows no key says nothing of which are known.
            closed: !keys.is_empty(),
            keys,
            validator: None,
        }
    }

    /// The keys `SECTION_KEY` variables may set.
    pub fn env_keys(&self) -> impl Iterator<Item = (&str, &Key)> {
        self.keys
            .iter()
            .filter(|(_, key)| key.from_env)
            .map(|(name, key)| (name.as_str(), key))
    }

    /// Checks the table's keys, then (with a schema) its values. The error
    /// names the key (`section.key`, or `key` for settings kept at the top
    /// level) and says what is wrong, in one line.
    pub fn check(&self, section: Option<&str>, table: &toml::Table) -> Result<(), String> {
        let key = |name: &str| match section {
            Some(section) => format!("`{section}.{name}`"),
            None => format!("`{name}`"),
        };
        if self.closed
            && let Some(unknown) = table.keys().find(|k| !self.keys.contains_key(*k))
        {
            let hint = match crate::config::nearest(unknown, self.keys.keys().map(String::as_str)) {
                Some(near) => format!("did you mean {}?", key(near)),
                None => format!(
                    "it takes: {}",
                    self.keys.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            return Err(format!("unknown key {}; {hint}", key(unknown)));
        }
        let Some(validator) = &self.validator else {
            return Ok(());
        };
        let instance = serde_json::to_value(table).map_err(|e| e.to_string())?;
        let violations: Vec<String> = validator
            .iter_errors(&instance)
            .take(MAX_VIOLATIONS)
            .map(|e| {
                let path = e
                    .instance_path()
                    .as_str()
                    .trim_start_matches('/')
                    .replace('/', ".");
                let at = match (path.is_empty(), section) {
                    (false, _) => key(&path),
                    (true, Some(section)) => format!("[{section}]"),
                    (true, None) => "the connector's settings".to_string(),
                };
                // Masked: the value may be a secret in the wrong shape.
                one_line(
                    format!("{at}: {}", e.masked_with("the value")),
                    guest_text::VALUE,
                )
            })
            .collect();
        match violations.is_empty() {
            true => Ok(()),
            false => Err(violations.join("; ")),
        }
    }

    /// The keys, one line each, for `inspect`; `None` without a schema (the
    /// example says it better then).
    pub fn key_lines(&self) -> Option<String> {
        self.validator.as_ref()?;
        let lines: Vec<String> = self
            .keys
            .iter()
            .map(|(name, key)| {
                let types = match key.types.is_empty() {
                    true => "any".to_string(),
                    false => key.types.join(" or "),
                };
                match &key.description {
                    Some(d) => format!("  {name} ({types}): {d}"),
                    None => format!("  {name} ({types})"),
                }
            })
            .collect();
        Some(lines.join("\n"))
    }
}

/// The JSON types a property's values may have, following one local
/// `$ref` and the branches of `anyOf`/`oneOf` (how schemars writes
/// `Option<T>` and enums).
fn types_of(property: &Json, root: &Json) -> Vec<String> {
    let mut types = Vec::new();
    collect_types(property, root, 4, &mut types);
    types.sort();
    types.dedup();
    types
}

fn collect_types(schema: &Json, root: &Json, depth: u8, types: &mut Vec<String>) {
    if depth == 0 {
        return;
    }
    match schema.get("type") {
        Some(Json::String(t)) => types.push(t.clone()),
        Some(Json::Array(ts)) => types.extend(ts.iter().filter_map(Json::as_str).map(String::from)),
        _ => {}
    }
    if let Some(Json::Array(values)) = schema.get("enum") {
        types.extend(values.iter().map(|v| json_type(v).to_string()));
    }
    if let Some(value) = schema.get("const") {
        types.push(json_type(value).into());
    }
    for branches in ["anyOf", "oneOf", "allOf"] {
        if let Some(Json::Array(branches)) = schema.get(branches) {
            for branch in branches {
                collect_types(branch, root, depth - 1, types);
            }
        }
    }
    if let Some(target) = schema
        .get("$ref")
        .and_then(Json::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
    {
        collect_types(target, root, depth - 1, types);
    }
}

fn json_type(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_f64() => "number",
        Json::Number(_) => "integer",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn toml_type(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "string",
        toml::Value::Integer(_) => "integer",
        toml::Value::Float(_) => "number",
        toml::Value::Boolean(_) => "boolean",
        toml::Value::Datetime(_) => "string",
        toml::Value::Array(_) => "array",
        toml::Value::Table(_) => "object",
    }
}

/// The keys a documented configuration example declares, with their example
/// values, including optional keys shown commented out (`# key = value`).
fn documented_example(example: &str) -> toml::Table {
    let uncommented: String = example
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            match trimmed.strip_prefix('#') {
                Some(rest)
                    if rest
                        .trim_start()
                        .parse::<toml::Table>()
                        .is_ok_and(|t| t.len() == 1) =>
                {
                    rest.trim_start()
                }
                _ => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    declared_example(&uncommented)
}

/// The keys an example sets outright, not in comments. Its root keys, or
/// the keys of its single table (examples may be written with or without
/// the `[section]` header).
fn declared_example(example: &str) -> toml::Table {
    let Ok(table) = example.parse::<toml::Table>() else {
        return toml::Table::new();
    };
    match table.values().next() {
        Some(toml::Value::Table(inner)) if table.len() == 1 => inner.clone(),
        _ => table,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As schemars writes a `Config` with a documented `u64`, an
    /// `Option<String>`, a unit enum behind a `$ref` and
    /// `deny_unknown_fields`.
    const SCHEMA: &str = r##"{
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Config",
        "type": "object",
        "properties": {
            "rate": {"description": "Records a second.", "type": "integer", "format": "uint64", "minimum": 0, "default": 10},
            "password": {"type": ["string", "null"]},
            "mode": {"$ref": "#/$defs/Mode"}
        },
        "additionalProperties": false,
        "$defs": {"Mode": {"type": "string", "enum": ["fast", "slow"]}}
    }"##;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn a_schema_gives_keys_types_and_documentation() {
        let t = ConnectorTable::from_schema(SCHEMA).unwrap();
        let keys: Vec<(&str, bool)> = t.env_keys().map(|(n, k)| (n, k.takes_text())).collect();
        assert_eq!(keys, [("mode", true), ("password", true), ("rate", false)]);
        let lines = t.key_lines().unwrap();
        assert!(
            lines.contains("  rate (integer): Records a second."),
            "{lines}"
        );
        assert!(lines.contains("  password (null or string)"), "{lines}");
        assert!(lines.contains("  mode (string)"), "{lines}");
    }

    #[test]
    fn a_schema_checks_keys_and_values_naming_the_key() {
        let t = ConnectorTable::from_schema(SCHEMA).unwrap();
        t.check(Some("gen"), &table("rate = 5\nmode = \"slow\""))
            .unwrap();
        let e = t.check(Some("gen"), &table("rtae = 5")).unwrap_err();
        assert_eq!(e, "unknown key `gen.rtae`; did you mean `gen.rate`?");
        let e = t.check(Some("gen"), &table("rate = \"fast\"")).unwrap_err();
        assert_eq!(e, "`gen.rate`: the value is not of type \"integer\"");
        // A value in the wrong shape may be a secret: never quoted.
        let e = t
            .check(Some("gen"), &table("password = { s = \"hunter2\" }"))
            .unwrap_err();
        assert!(
            e.starts_with("`gen.password`: the value is not of types"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = t
            .check(Some("gen"), &table("rate = -1\nmode = \"medium\""))
            .unwrap_err();
        assert!(e.contains("`gen.rate`") && e.contains("`gen.mode`"), "{e}");
    }

    #[test]
    fn an_open_schema_takes_other_keys() {
        let open = SCHEMA.replace("\"additionalProperties\": false,", "");
        let t = ConnectorTable::from_schema(&open).unwrap();
        t.check(Some("gen"), &table("anything = 1")).unwrap();
    }

    #[test]
    fn an_unusable_schema_is_refused_with_a_reason() {
        for (schema, why) in [
            ("not json", "not JSON"),
            (r#"{"type": 12}"#, "not a valid JSON Schema"),
            (r#"{"properties": []}"#, "not a valid JSON Schema"),
            // No fetching: a remote reference cannot be resolved.
            (
                r#"{"$ref": "http://127.0.0.1:9/s.json"}"#,
                "not a valid JSON Schema",
            ),
            // Patterns run on a linear-time engine, which has no
            // backreferences (a backtracking one could be made to spin).
            (
                r#"{"properties": {"k": {"type": "string", "pattern": "(a)\\1"}}}"#,
                "not a valid JSON Schema",
            ),
        ] {
            let e = ConnectorTable::from_schema(schema)
                .err()
                .unwrap_or_else(|| panic!("{schema} was taken"));
            assert!(e.contains(why), "{schema}: {e}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    fn guest_text_in_a_schema_is_bounded_and_one_line() {
        let long = "x".repeat(100_000);
        let schema = serde_json::json!({
            "properties": {format!("k\n{long}"): {"description": format!("line\nbreak{long}")}}
        });
        let t = ConnectorTable::from_schema(&schema.to_string()).unwrap();
        let lines = t.key_lines().unwrap();
        assert_eq!(lines.lines().count(), 1, "{}", &lines[..200]);
        assert!(lines.len() < guest_text::NAME + guest_text::VALUE + 200);
    }

    #[test]
    fn without_a_schema_the_example_gives_the_keys() {
        let t = ConnectorTable::from_example(
            "[file]\npath = \"/x\"\n# A comment, not a key.\n# fail_on = \"poison\"\n",
        );
        // Without a schema, `inspect` shows the example alone.
        assert_eq!(t.key_lines(), None);
        t.check(Some("file"), &table("path = \"/y\"\nfail_on = \"never\""))
            .unwrap();
        let e = t.check(Some("file"), &table("pth = \"/y\"")).unwrap_err();
        assert!(e.contains("did you mean `file.path`?"), "{e}");
        // Only keys set outright may come from the environment.
        let env: Vec<&str> = t.env_keys().map(|(n, _)| n).collect();
        assert_eq!(env, ["path"]);
        // An example without keys says nothing of which keys are known.
        ConnectorTable::from_example("# nothing to set")
            .check(Some("file"), &table("any = 1"))
            .unwrap();
    }
}
