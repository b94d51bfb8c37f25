//! Secrets taken out of a configuration before the API shows it: values of
//! keys that name a secret, and the password of a URL's user part.

use serde_json::Value as Json;

/// What a redacted value reads.
pub const REDACTED: &str = "<redacted>";

/// Parts of key names that mark a secret (`password`, `s3_secret_access_key`,
/// `api_token`, `tls_key`, `private_key_path` is a path, not a secret, but
/// where it points is nobody's business either).
const SECRET_PARTS: [&str; 7] = [
    "password",
    "secret",
    "token",
    "credential",
    "private",
    "access_key",
    "api_key",
];

/// Redacts `value` in place.
pub fn secrets(value: &mut Json) {
    match value {
        Json::Object(map) => {
            for (key, value) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if SECRET_PARTS.iter().any(|p| key.contains(p)) && !value.is_null() {
                    *value = Json::String(REDACTED.into());
                } else {
                    secrets(value);
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(secrets),
        Json::String(text) => {
            if let Some(shown) = url_without_password(text) {
                *text = shown;
            }
        }
        _ => {}
    }
}

/// `scheme://user:password@host...` with the password redacted, if `text`
/// is such a URL.
fn url_without_password(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (user_info, _) = rest[..authority_end].rsplit_once('@')?;
    let (user, _) = user_info.split_once(':')?;
    let host_and_rest = &rest[user_info.len() + 1..];
    Some(format!("{scheme}://{user}:{REDACTED}@{host_and_rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_and_url_passwords_are_redacted() {
        let mut config = json!({
            "connector": {
                "postgres": {"url": "postgres://app:hunter2@db:5432/x", "password": "p"},
                "deltalake": {"s3_secret_access_key": "s", "s3_region": "eu"},
                "routes": [{"api_token": "t", "to": "http://h/x?a@b"}],
                "password_file": null,
            }
        });
        secrets(&mut config);
        let text = config.to_string();
        for secret in ["hunter2", "\"p\"", "\"s\"", "\"t\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            config["connector"]["postgres"]["url"],
            "postgres://app:<redacted>@db:5432/x"
        );
        assert_eq!(config["connector"]["deltalake"]["s3_region"], "eu");
        assert_eq!(config["connector"]["routes"][0]["to"], "http://h/x?a@b");
        assert!(config["connector"]["password_file"].is_null());
    }
}
