//! One request to the endpoint, and what its answer means for the records
//! it carried.

use std::io::Read;
use std::time::{Duration, SystemTime};

use base64::Engine;
use danube_connect_sdk::ConnectorError;
use danube_connector_tls::http::{Timeouts, agent, handshake_failure};
use ureq::Agent;

use crate::config::{Config, Method, shown};

/// How much of an answer's body is read, to quote it in an error.
const BODY_READ: u64 = 4096;

/// How much of it is quoted.
const EXCERPT_CHARS: usize = 200;

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: the endpoint has the records.
    Written,
    /// A 4xx other than for credentials or rate: the endpoint will never
    /// take these records as they are.
    Refused(String),
    /// 408, 429, 5xx or no answer: try again, not before `after` when the
    /// endpoint said (`Retry-After`, bounded by `max_retry_after_secs`).
    Retry {
        why: String,
        after: Option<Duration>,
    },
}

/// The endpoint's client: the agent, and the headers of every request.
pub struct Client {
    agent: Agent,
    method: Method,
    /// `Content-Type`, `Authorization` and the configured headers.
    headers: Vec<(String, String)>,
    max_retry_after: Duration,
}

impl Client {
    /// The client for `config`; fails when a TLS file cannot be read.
    pub fn new(config: &Config) -> Result<Client, ConnectorError> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(config.connect_timeout_secs),
            step: Duration::from_secs(config.request_timeout_secs),
        };
        let agent = agent(&config.tls_files(), timeouts).map_err(ConnectorError::config)?;
        let mut headers = vec![(
            "Content-Type".to_string(),
            config.content_type().to_string(),
        )];
        if !config.bearer_token.is_empty() {
            headers.push((
                "Authorization".into(),
                format!("Bearer {}", config.bearer_token),
            ));
        } else if !config.username.is_empty() {
            let pair = format!("{}:{}", config.username, config.password);
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            headers.push(("Authorization".into(), format!("Basic {encoded}")));
        }
        headers.extend(config.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Client {
            agent,
            method: config.method,
            headers,
            max_retry_after: Duration::from_secs(config.max_retry_after_secs),
        })
    }

    /// Sends `body` to `url` with `extra` headers. `Err` is for the
    /// operator: credentials refused, a redirect, a certificate refused.
    pub fn send(
        &self,
        url: &str,
        body: &[u8],
        extra: &[(&str, String)],
    ) -> Result<Answer, ConnectorError> {
        let request = match self.method {
            Method::Post => self.agent.post(url),
            Method::Put => self.agent.put(url),
        };
        let request = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .fold(request, |r, (k, v)| r.header(k, v));
        let mut response = match request.send(body) {
            Ok(response) => response,
            Err(e) => return unreachable(url, &e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after)
            .map(|after| after.min(self.max_retry_after));
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(shown);
        let mut quoted = Vec::new();
        // A body that cannot be read only leaves the quote empty.
        let _ = response
            .body_mut()
            .as_reader()
            .take(BODY_READ)
            .read_to_end(&mut quoted);
        classify(
            status,
            &excerpt(&quoted),
            &shown(url),
            retry_after,
            location,
        )
    }
}

/// A request that got no answer: a certificate the TLS handshake refused
/// is for the configuration to fix; anything else may pass.
fn unreachable(url: &str, e: &ureq::Error) -> Result<Answer, ConnectorError> {
    let url = shown(url);
    match handshake_failure(e) {
        Some(failure) => Err(ConnectorError::config(format!(
            "{url}: TLS handshake failed: {failure}; check `ca_file` and the host in the URL"
        ))),
        None => Ok(Answer::Retry {
            why: format!("{url} unreachable: {e}"),
            after: None,
        }),
    }
}

/// What an answer with `status` means; `excerpt` quotes its body.
fn classify(
    status: u16,
    excerpt: &str,
    url: &str,
    retry_after: Option<Duration>,
    location: Option<String>,
) -> Result<Answer, ConnectorError> {
    let said = format!("{url} answered HTTP {status}: {excerpt}");
    Ok(match status {
        200..=299 => Answer::Written,
        401 | 403 | 407 => {
            return Err(ConnectorError::fatal(format!(
                "the endpoint refused the credentials ({said}); check `bearer_token`, `username` and `password` (env HTTP_BEARER_TOKEN, HTTP_PASSWORD) or `headers`"
            )));
        }
        300..=399 => {
            return Err(ConnectorError::fatal(format!(
                "the endpoint redirects{} ({said}); set the URL to where it points",
                location.map(|l| format!(" to {l}")).unwrap_or_default()
            )));
        }
        408 | 429 | 500..=599 => Answer::Retry {
            why: match retry_after {
                Some(after) => format!("{said} (Retry-After: {} s)", after.as_secs_f32()),
                None => said,
            },
            after: retry_after,
        },
        400..=499 => Answer::Refused(said),
        _ => Answer::Retry {
            why: said,
            after: None,
        },
    })
}

/// A `Retry-After` value: delay-seconds or an HTTP-date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => httpdate::parse_http_date(value)
            .ok()
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default()),
    }
}

/// The start of an answer's body on one line: lossy UTF-8, control
/// characters as spaces, at most [`EXCERPT_CHARS`] characters.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut quoted: String = text
        .trim()
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.trim().chars().nth(EXCERPT_CHARS).is_some() {
        quoted.push('…');
    }
    if quoted.is_empty() {
        "(empty body)".into()
    } else {
        quoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(status: u16) -> String {
        match classify(status, "x", "http://e", None, None) {
            Ok(Answer::Written) => "written".into(),
            Ok(Answer::Refused(_)) => "refused".into(),
            Ok(Answer::Retry { .. }) => "retry".into(),
            Err(e) => e.class().into(),
        }
    }

    #[test]
    fn answers_are_classed() {
        for (status, wanted) in [
            (200, "written"),
            (204, "written"),
            (400, "refused"),
            (404, "refused"),
            (413, "refused"),
            (422, "refused"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
            (401, "fatal"),
            (403, "fatal"),
            (301, "fatal"),
        ] {
            assert_eq!(class(status), wanted, "HTTP {status}");
        }
        let Ok(Answer::Retry { why, after }) = classify(
            503,
            "busy",
            "http://e/in",
            Some(Duration::from_secs(3)),
            None,
        ) else {
            panic!()
        };
        assert_eq!(after, Some(Duration::from_secs(3)));
        assert_eq!(
            why,
            "http://e/in answered HTTP 503: busy (Retry-After: 3 s)"
        );
        let e = classify(308, "", "http://e", None, Some("https://e/".into())).unwrap_err();
        assert!(e.message().contains("redirects to https://e/"), "{e}");
    }

    #[test]
    fn credentials_become_an_authorization_header() {
        let config = |extra: &str| -> Config {
            danube_connect_sdk::parse_config(&format!(
                r#"{{"url": "http://e:1", {extra} "routes": [{{"topic": "/a/b"}}]}}"#
            ))
            .unwrap()
        };
        let authorization = |c: &Config| {
            Client::new(c)
                .unwrap()
                .headers
                .into_iter()
                .find(|(k, _)| k == "Authorization")
                .map(|(_, v)| v)
        };
        assert_eq!(
            authorization(&config(r#""username": "user", "password": "pw","#)).as_deref(),
            Some("Basic dXNlcjpwdw==")
        );
        assert_eq!(
            authorization(&config(r#""bearer_token": "t0k","#)).as_deref(),
            Some("Bearer t0k")
        );
        assert_eq!(authorization(&config("")), None);
    }

    #[test]
    fn retry_after_in_both_forms() {
        assert_eq!(retry_after(" 7 "), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(100);
        let after = retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            after > Duration::from_secs(97) && after <= Duration::from_secs(100),
            "{after:?}"
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn excerpts_are_bounded_and_on_one_line() {
        assert_eq!(excerpt(b" bad\nrecord\x1b \n"), "bad record ");
        assert_eq!(excerpt(b""), "(empty body)");
        let long = excerpt(&[b'a'; 5000]);
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&[0xff, b'x']), "\u{fffd}x");
    }
}
