//! Text a guest hands the host: bounded before it is kept, sent or served,
//! and made harmless before it is printed.
//!
//! A hostile guest controls every byte of every string it returns or passes
//! to an import. Unbounded, a multi-megabyte metric name or health detail is
//! copied into the supervisor (which every connector of a directory shares),
//! kept in sets and cloned per `/health` request; raw, a newline or an ANSI
//! escape in a log message forges lines and terminal output. The worker
//! bounds each string where it leaves the guest ([`bounded`]), so the
//! supervisor never holds more than these limits, and escapes it there
//! ([`one_line`], [`lines`]), so nothing downstream has to.

use std::borrow::Cow;

/// Error texts, health details, trap descriptions: one line for a person.
pub const MESSAGE: usize = 4 * 1024;
/// A log message.
pub const LOG_MESSAGE: usize = 16 * 1024;
/// Names: metric names, label and log field keys.
pub const NAME: usize = 256;
/// Values: metric label values, log field values.
pub const VALUE: usize = 1024;
/// Free text a module describes itself with (`describe`'s description).
pub const DESCRIPTION: usize = 4 * 1024;
/// The configuration example a module describes itself with.
pub const CONFIG_EXAMPLE: usize = 64 * 1024;
/// The JSON Schema of its configuration table. Over it, the module is
/// refused rather than the schema cut: cut JSON says nothing.
pub const CONFIG_SCHEMA: usize = 64 * 1024;
/// A source record's key and attributes together: metadata beside the
/// payload, which the host holds until the broker acknowledges the record.
/// Over it, the poll is refused rather than cut: they are data.
pub const ATTRIBUTES: usize = 64 * 1024;

/// `text`, cut to at most `max` bytes on a character boundary, with a note of
/// how much was cut (the note comes on top of `max`).
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let cut = text.floor_char_boundary(max);
    let dropped = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!("…[{dropped} more bytes cut]"));
    text
}

/// Guest text the host keeps, serves and prints as one line: bounded, and
/// with no control character left to forge a log line or restyle a terminal.
pub fn one_line(text: String, max: usize) -> String {
    printable(&bounded(text, max)).into_owned()
}

/// As [`one_line`], keeping line breaks and tabs: for multi-line text such as
/// a configuration example.
pub fn lines(text: String, max: usize) -> String {
    escape_controls(&bounded(text, max), |c| c == '\n' || c == '\t').into_owned()
}

/// Every `(key, value)` pair made [`one_line`] with [`NAME`] and [`VALUE`].
pub fn one_line_pairs(pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        .map(|(k, v)| (one_line(k, NAME), one_line(v, VALUE)))
        .collect()
}

/// `text` with every control character escaped (`\n`, `\u{1b}`).
pub fn printable(text: &str) -> Cow<'_, str> {
    escape_controls(text, |_| false)
}

fn escape_controls(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && !keep(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary_and_says_so() {
        let text = "é".repeat(10_000);
        let out = bounded(text, 101);
        assert!(out.starts_with(&"é".repeat(50)));
        assert!(out.ends_with("…[19900 more bytes cut]"), "{out}");
        assert_eq!(bounded("short".into(), 5), "short");
    }

    #[test]
    fn control_characters_are_escaped() {
        let forged = "ok\n{\"level\":\"INFO\"}\u{1b}]0;title\u{7}";
        assert_eq!(
            printable(forged),
            "ok\\n{\"level\":\"INFO\"}\\u{1b}]0;title\\u{7}"
        );
        assert_eq!(
            lines("a = 1\n\tb\u{1b}[2J".into(), 100),
            "a = 1\n\tb\\u{1b}[2J"
        );
        assert_eq!(one_line("a\nb".into(), 100), "a\\nb");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
    }
}
