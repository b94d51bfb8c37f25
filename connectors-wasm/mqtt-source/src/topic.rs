//! MQTT topic filters (`+` one level, `#` the remaining levels).

/// Checks a subscription filter against MQTT 3.1.1 §4.7.
pub fn validate_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("an MQTT topic filter is not empty");
    }
    if filter.len() > u16::MAX as usize {
        return Err("an MQTT topic filter is at most 65535 bytes");
    }
    if filter.contains('\0') {
        return Err("an MQTT topic filter contains no NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err("`#` must be a whole level and the last one (e.g. `sensors/#`)");
        }
        if level.contains('+') && *level != "+" {
            return Err("`+` must be a whole level (e.g. `sensors/+/temp`)");
        }
    }
    Ok(())
}

/// Whether `topic` (a concrete topic name) matches `filter`.
pub fn matches(filter: &str, topic: &str) -> bool {
    // Filters starting with a wildcard do not match topics starting with `$`.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("sensors/#", "sensors/a"));
        assert!(matches("sensors/#", "sensors/a/b"));
        assert!(
            matches("sensors/#", "sensors"),
            "`#` also matches the parent level"
        );
        assert!(!matches("sensors/#", "sensorsX/a"));
        assert!(matches("sensors/+/temp", "sensors/a/temp"));
        assert!(!matches("sensors/+/temp", "sensors/a/b/temp"));
        assert!(!matches("sensors/+", "sensors/a/b"));
        assert!(matches("+/+", "/a"));
        assert!(matches("#", "a/b"));
        assert!(!matches("#", "$SYS/broker"));
        assert!(matches("$SYS/#", "$SYS/broker"));
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/b/c"));
    }

    #[test]
    fn filters() {
        assert!(validate_filter("a/#").is_ok());
        assert!(validate_filter("+/b/+").is_ok());
        assert!(validate_filter("#").is_ok());
        assert!(validate_filter("a/#/b").is_err());
        assert!(validate_filter("a#").is_err());
        assert!(validate_filter("a+/b").is_err());
        assert!(validate_filter("").is_err());
    }
}
