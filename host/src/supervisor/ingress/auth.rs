//! `[auth]`: who may send to an ingress connector. The listener checks it
//! before the request is queued for the guest; a request that fails is
//! answered 401 with the reason, never with the secret.
//!
//! HMAC signatures carry a signing time by default, and an accepted
//! signature is remembered for the tolerance window: a captured request
//! can be neither sent again later (stale) nor within the window (seen).
//! A signature is remembered only once its request is stored, so a sender
//! whose request got a 503 may send the same one again.
//!
//! Built on ring's HMAC, `subtle` for comparing keys and signatures in
//! constant time and `jsonwebtoken` for tokens; only the parsing of the
//! signature header (GitHub's `sha256=<hex>`, Stripe's `t=,v1=`) is ours.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderName};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use subtle::ConstantTimeEq;

use crate::config::{AuthConfig, AuthKind};

/// How many accepted HMAC signatures are remembered at most; past that,
/// requests are refused until old ones leave the window (503-like, but
/// said as 401 with the reason, since the sender cannot be told apart).
const REMEMBERED: usize = 1_000_000;

/// The check `[auth]` asks for, with its secret loaded.
pub enum Authenticator {
    None,
    ApiKey {
        header: HeaderName,
        key: Vec<u8>,
    },
    Hmac(Box<HmacCheck>),
    Jwt {
        key: Box<DecodingKey>,
        validation: Box<Validation>,
    },
}

pub struct HmacCheck {
    header: HeaderName,
    key: ring::hmac::Key,
    timestamp_header: HeaderName,
    tolerance: u64,
    require_timestamp: bool,
    seen: Arc<Mutex<HashMap<[u8; 16], u64>>>,
}

/// An accepted signature, held until its request's answer is known:
/// [`Seen::keep`] remembers it (stored), dropping it forgets it (not
/// stored: the sender may try again).
pub struct Seen {
    seen: Arc<Mutex<HashMap<[u8; 16], u64>>>,
    tag: [u8; 16],
    kept: bool,
}

impl Seen {
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Seen {
    fn drop(&mut self) {
        if !self.kept {
            lock(&self.seen).remove(&self.tag);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Authenticator {
    /// The check for `config` (none without `[auth]`), its secret read
    /// through `env`; the error names the key to fix.
    pub fn new(
        config: Option<&AuthConfig>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Authenticator, String> {
        let Some(config) = config else {
            return Ok(Authenticator::None);
        };
        let header = |default: Option<&str>| -> Result<HeaderName, String> {
            let name = config.header.as_deref().or(default).ok_or_else(|| {
                format!(
                    "[auth] type = \"{}\" needs `header`, the header carrying the signature",
                    kind_name(config.kind)
                )
            })?;
            HeaderName::try_from(name)
                .map_err(|_| format!("[auth] header {name:?} is not a header name"))
        };
        let secret = || -> Result<Vec<u8>, String> {
            let var = config.secret_env.as_deref().ok_or_else(|| {
                format!(
                    "[auth] type = \"{}\" needs `secret_env`, the environment variable holding the secret",
                    kind_name(config.kind)
                )
            })?;
            match env(var) {
                Some(value) if !value.is_empty() => Ok(value.into_bytes()),
                _ => Err(format!(
                    "[auth] secret_env = {var:?}, but the environment has no {var} (or it is empty): set it"
                )),
            }
        };
        Ok(match config.kind {
            AuthKind::None => Authenticator::None,
            AuthKind::Apikey => Authenticator::ApiKey {
                header: header(Some("x-api-key"))?,
                key: secret()?,
            },
            AuthKind::Hmac => {
                let algorithm = match config.algorithm.as_deref().unwrap_or("sha256") {
                    "sha256" => ring::hmac::HMAC_SHA256,
                    "sha512" => ring::hmac::HMAC_SHA512,
                    other => {
                        return Err(format!(
                            "[auth] algorithm {other:?} is not an HMAC algorithm: use \"sha256\" or \"sha512\""
                        ));
                    }
                };
                let timestamp = config
                    .timestamp_header
                    .as_deref()
                    .unwrap_or("x-webhook-timestamp");
                Authenticator::Hmac(Box::new(HmacCheck {
                    header: header(None)?,
                    key: ring::hmac::Key::new(algorithm, &secret()?),
                    timestamp_header: HeaderName::try_from(timestamp).map_err(|_| {
                        format!("[auth] timestamp_header {timestamp:?} is not a header name")
                    })?,
                    tolerance: config.tolerance_seconds,
                    require_timestamp: config.require_timestamp,
                    seen: Arc::default(),
                }))
            }
            AuthKind::Jwt => {
                let (key, default) = match &config.public_key_path {
                    Some(path) => {
                        let pem = std::fs::read(path).map_err(|e| {
                            format!("[auth] public_key_path {}: {e}", path.display())
                        })?;
                        let key = DecodingKey::from_rsa_pem(&pem)
                            .or_else(|_| DecodingKey::from_ec_pem(&pem))
                            .map_err(|e| {
                                format!(
                                    "[auth] public_key_path {}: not an RSA or EC public key: {e}",
                                    path.display()
                                )
                            })?;
                        (key, Algorithm::RS256)
                    }
                    None => (DecodingKey::from_secret(&secret()?), Algorithm::HS256),
                };
                let algorithm = match config.algorithm.as_deref() {
                    None => default,
                    Some(name) => name.parse::<Algorithm>().map_err(|_| {
                        format!("[auth] algorithm {name:?} is not a JWT algorithm (HS256, RS256, ES256, ...)")
                    })?,
                };
                let mut validation = Validation::new(algorithm);
                validation.leeway = 0;
                Authenticator::Jwt {
                    key: Box::new(key),
                    validation: Box::new(validation),
                }
            }
        })
    }

    /// The header that carries a credential the connector has no need to
    /// see (an API key, a token): it is taken out of the request it gets.
    /// An HMAC signature proves only this request, so it stays.
    pub fn credential_header(&self) -> Option<HeaderName> {
        match self {
            Authenticator::ApiKey { header, .. } => Some(header.clone()),
            Authenticator::Jwt { .. } => Some(axum::http::header::AUTHORIZATION),
            Authenticator::None | Authenticator::Hmac(_) => None,
        }
    }

    /// The checks that need only the headers: API keys and tokens.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), String> {
        match self {
            Authenticator::ApiKey { header, key } => {
                let given = headers
                    .get(header)
                    .ok_or_else(|| format!("missing header {header}"))?;
                match bool::from(given.as_bytes().ct_eq(key)) {
                    true => Ok(()),
                    false => Err(format!("wrong key in {header}")),
                }
            }
            Authenticator::Jwt { key, validation } => {
                let token = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or("missing `Authorization: Bearer <token>`")?;
                jsonwebtoken::decode::<serde_json::Value>(token, key, validation)
                    .map(drop)
                    .map_err(|e| format!("token refused: {e}"))
            }
            Authenticator::None | Authenticator::Hmac(_) => Ok(()),
        }
    }

    /// The check that needs the body: an HMAC signature, at `now` (Unix
    /// seconds). An accepted signature comes back held: keep it once the
    /// request is stored.
    pub fn check_body(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Option<Seen>, String> {
        match self {
            Authenticator::Hmac(check) => check.verify(headers, body, now).map(Some),
            _ => Ok(None),
        }
    }
}

fn kind_name(kind: AuthKind) -> &'static str {
    match kind {
        AuthKind::None => "none",
        AuthKind::Apikey => "apikey",
        AuthKind::Hmac => "hmac",
        AuthKind::Jwt => "jwt",
    }
}

impl HmacCheck {
    fn verify(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<Seen, String> {
        let value = headers
            .get(&self.header)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("missing header {}", self.header))?;
        let (timestamp, signatures) =
            parse_signature(value).map_err(|why| format!("header {}: {why}", self.header))?;
        let timestamp = match timestamp {
            Some(t) => Some(t),
            None => headers
                .get(&self.timestamp_header)
                .map(|v| {
                    v.to_str()
                        .ok()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                        .ok_or_else(|| {
                            format!("header {} is not Unix seconds", self.timestamp_header)
                        })
                })
                .transpose()?,
        };
        // The body is signed in place (no copy with the time in front), and
        // once: each candidate signature is compared with that one tag.
        let mut signing = ring::hmac::Context::with_key(&self.key);
        match timestamp {
            Some(t) => {
                if t.abs_diff(now) > self.tolerance {
                    return Err(format!(
                        "the signing time is {} s from now, more than [auth] tolerance_seconds = {}",
                        t.abs_diff(now),
                        self.tolerance
                    ));
                }
                signing.update(format!("{t}.").as_bytes());
            }
            None if self.require_timestamp => {
                return Err(format!(
                    "no signing time: send it in {} (Unix seconds, signing `<time>.<body>`)",
                    self.timestamp_header
                ));
            }
            None => {}
        }
        signing.update(body);
        let expected = signing.sign();
        let tag = signatures
            .iter()
            .find(|s| bool::from(s.as_slice().ct_eq(expected.as_ref())))
            .ok_or("bad signature")?;
        let mut key = [0u8; 16];
        let n = tag.len().min(16);
        key[..n].copy_from_slice(&tag[..n]);
        let expires = timestamp.unwrap_or(now) + self.tolerance;
        let mut seen = lock(&self.seen);
        if seen.len() >= REMEMBERED {
            seen.retain(|_, until| *until >= now);
        }
        if seen.len() >= REMEMBERED {
            return Err(
                "too many signatures within the tolerance window to remember; try again later"
                    .into(),
            );
        }
        if seen.get(&key).is_some_and(|until| *until >= now) {
            return Err("this signature was used already".into());
        }
        seen.insert(key, expires);
        Ok(Seen {
            seen: self.seen.clone(),
            tag: key,
            kept: false,
        })
    }
}

/// A signature header's signing time (Stripe's `t=`) and signatures:
/// `t=<time>,v1=<hex>[,v1=<hex>]`, `sha256=<hex>` / `sha512=<hex>`, or
/// `<hex>`.
fn parse_signature(value: &str) -> Result<(Option<u64>, Vec<Vec<u8>>), &'static str> {
    let hex = |s: &str| hex::decode(s.trim()).map_err(|_| "the signature is not hex");
    if value.contains("v1=") {
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in value.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => {
                    timestamp = Some(t.parse().map_err(|_| "`t=` is not Unix seconds")?)
                }
                Some(("v1", s)) => signatures.push(hex(s)?),
                _ => {}
            }
        }
        return Ok((timestamp, signatures));
    }
    let bare = value
        .strip_prefix("sha256=")
        .or_else(|| value.strip_prefix("sha512="))
        .unwrap_or(value);
    Ok((None, vec![hex(bare)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";

    fn config(kind: AuthKind, extra: impl FnOnce(&mut AuthConfig)) -> AuthConfig {
        let mut c = AuthConfig {
            kind,
            secret_env: Some("HOOK_SECRET".into()),
            header: Some("x-signature".into()),
            ..AuthConfig::default()
        };
        extra(&mut c);
        c
    }

    fn env(name: &str) -> Option<String> {
        (name == "HOOK_SECRET").then(|| SECRET.to_string())
    }

    fn sign(text: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        hex::encode(ring::hmac::sign(&key, text).as_ref())
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
        }
        map
    }

    #[test]
    fn hmac_with_a_signing_time_is_accepted_once_and_only_fresh() {
        let auth = Authenticator::new(Some(&config(AuthKind::Hmac, |_| {})), &env).unwrap();
        let body = br#"{"id":1}"#;
        let now = 1_800_000_000;
        let good = |t: u64| {
            headers(&[
                (
                    "x-signature",
                    format!(
                        "sha256={}",
                        sign(&[format!("{t}.").as_bytes(), body].concat())
                    ),
                ),
                ("x-webhook-timestamp", t.to_string()),
            ])
        };
        let seen = auth.check_body(&good(now), body, now).unwrap().unwrap();
        // Not kept (the request was not stored): it may come again.
        drop(seen);
        auth.check_body(&good(now), body, now)
            .unwrap()
            .unwrap()
            .keep();
        let e = auth.check_body(&good(now), body, now + 1).err().unwrap();
        assert!(e.contains("used already"), "{e}");
        let e = auth.check_body(&good(now - 301), body, now).err().unwrap();
        assert!(e.contains("301 s from now"), "{e}");
        let e = auth
            .check_body(&good(now), b"{\"id\":2}", now)
            .err()
            .unwrap();
        assert_eq!(e, "bad signature");
        let e = auth
            .check_body(&headers(&[("x-signature", sign(body))]), body, now)
            .err()
            .unwrap();
        assert!(e.contains("no signing time"), "{e}");
    }

    #[test]
    fn stripe_and_github_signatures() {
        let stripe = Authenticator::new(
            Some(&config(AuthKind::Hmac, |c| {
                c.header = Some("Stripe-Signature".into())
            })),
            &env,
        )
        .unwrap();
        let body = b"{}";
        let t = 1_800_000_000u64;
        let value = format!(
            "t={t},v1=00ff,v1={}",
            sign(&[format!("{t}.").as_bytes(), body].concat())
        );
        assert!(
            stripe
                .check_body(&headers(&[("stripe-signature", value)]), body, t + 5)
                .is_ok()
        );

        let github = Authenticator::new(
            Some(&config(AuthKind::Hmac, |c| {
                c.header = Some("X-Hub-Signature-256".into());
                c.require_timestamp = false;
            })),
            &env,
        )
        .unwrap();
        let value = format!("sha256={}", sign(body));
        assert!(
            github
                .check_body(&headers(&[("x-hub-signature-256", value)]), body, t)
                .is_ok()
        );
    }

    #[test]
    fn api_keys_and_configuration_errors() {
        let auth =
            Authenticator::new(Some(&config(AuthKind::Apikey, |c| c.header = None)), &env).unwrap();
        assert!(
            auth.check_headers(&headers(&[("x-api-key", SECRET.into())]))
                .is_ok()
        );
        assert_eq!(
            auth.check_headers(&headers(&[("x-api-key", "nope".into())]))
                .err()
                .unwrap(),
            "wrong key in x-api-key"
        );
        assert!(
            auth.check_headers(&HeaderMap::new())
                .err()
                .unwrap()
                .contains("missing header")
        );
        let e = Authenticator::new(Some(&config(AuthKind::Apikey, |_| {})), &|_| None)
            .err()
            .unwrap();
        assert!(e.contains("the environment has no HOOK_SECRET"), "{e}");
        let e = Authenticator::new(Some(&config(AuthKind::Hmac, |c| c.header = None)), &env)
            .err()
            .unwrap();
        assert!(e.contains("needs `header`"), "{e}");
        let e = Authenticator::new(
            Some(&config(AuthKind::Hmac, |c| {
                c.algorithm = Some("md5".into())
            })),
            &env,
        )
        .err()
        .unwrap();
        assert!(e.contains("\"md5\""), "{e}");
    }

    #[test]
    fn jwt_tokens_are_verified_with_their_expiry() {
        let auth = Authenticator::new(Some(&config(AuthKind::Jwt, |_| {})), &env).unwrap();
        let token = |exp: u64| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &serde_json::json!({"sub": "sender", "exp": exp}),
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let bearer = |t: String| headers(&[("authorization", format!("Bearer {t}"))]);
        assert!(auth.check_headers(&bearer(token(now + 60))).is_ok());
        let e = auth.check_headers(&bearer(token(now - 60))).err().unwrap();
        assert!(e.contains("ExpiredSignature"), "{e}");
        assert!(
            auth.check_headers(&HeaderMap::new())
                .err()
                .unwrap()
                .contains("Bearer")
        );
    }
}
