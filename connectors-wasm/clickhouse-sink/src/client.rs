//! ClickHouse's HTTP interface, and what its failures mean for the host.

use std::time::Duration;

use danube_connect_sdk::ConnectorError;
use danube_connector_tls::http::{Timeouts, agent, handshake_failure};
use ureq::Agent;

use crate::config::Config;

/// Why a request failed, in the classes the sink acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// ClickHouse could not read the data sent (a value it cannot parse):
    /// some record of the batch is bad.
    Data(String),
    /// Anything else, already classed for the host.
    Other(ConnectorError),
}

/// For statements other than an insert (CREATE TABLE, SELECT 1): there is
/// no record to blame, so a data error means the statement is wrong.
impl From<Failure> for ConnectorError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Data(message) => ConnectorError::fatal(message),
            Failure::Other(e) => e,
        }
    }
}

/// ClickHouse exception codes for credentials that were refused: unknown
/// user (192), wrong password (193), password required (194), address not
/// allowed (195), and on newer servers authentication failed (516).
const AUTH_CODES: [u32; 5] = [192, 193, 194, 195, 516];

const AUTH_FAILED: &str =
    "authentication failed (check `user`, and `password` or env CLICKHOUSE_PASSWORD)";

/// Codes for input ClickHouse cannot parse or convert: the data is at fault.
const DATA_CODES: [u32; 12] = [6, 26, 27, 32, 38, 41, 53, 69, 70, 72, 117, 131];

/// Codes for a table or database that does not match the configuration
/// (unknown column, identifier, table or database; illegal column;
/// read-only user; access denied): retrying cannot help.
const SCHEMA_CODES: [u32; 8] = [16, 44, 47, 60, 81, 164, 291, 497];

/// A ClickHouse server reached over HTTP with one user's credentials.
pub struct Client {
    agent: Agent,
    url: String,
    user: String,
    password: String,
}

impl Client {
    /// The agent for `config`'s server; fails when a TLS file cannot be read.
    pub fn new(config: &Config) -> Result<Client, ConnectorError> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(config.connect_timeout_secs),
            step: Duration::from_secs(config.request_timeout_secs),
        };
        let agent = agent(&config.tls_files(), timeouts).map_err(ConnectorError::config)?;
        Ok(Client {
            agent,
            url: config.url.trim_end_matches('/').to_string() + "/",
            user: config.user.clone(),
            password: config.password.clone(),
        })
    }

    /// Runs `query`, with `body` as its input data (the rows of an INSERT).
    /// Returns the response body.
    pub fn execute(&self, query: &str, body: &[u8]) -> Result<String, Failure> {
        let mut response = self
            .agent
            .post(&self.url)
            .query("query", query)
            .header("X-ClickHouse-User", &self.user)
            .header("X-ClickHouse-Key", &self.password)
            .send(body)
            .map_err(|e| Failure::Other(self.unreachable(&e)))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| {
            Failure::Other(ConnectorError::retryable(format!(
                "reading ClickHouse's response: {e}"
            )))
        })?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(classify(status, &text))
        }
    }

    /// A request that got no answer: a certificate the TLS handshake refused
    /// is for the configuration to fix; anything else may pass.
    fn unreachable(&self, e: &ureq::Error) -> ConnectorError {
        match handshake_failure(e) {
            Some(failure) => ConnectorError::config(format!(
                "ClickHouse at {}: TLS handshake failed: {failure}; check `ca_file` and the host in `url`",
                self.url
            )),
            None => {
                ConnectorError::retryable(format!("ClickHouse at {} unreachable: {e}", self.url))
            }
        }
    }
}

/// The class of a ClickHouse error response with HTTP `status` and `body`
/// (`Code: N, e.displayText() = DB::Exception: ...`).
pub fn classify(status: u16, body: &str) -> Failure {
    let message = body.lines().next().unwrap_or_default().trim();
    let message = message
        .strip_suffix(", e.what() = DB::Exception")
        .unwrap_or(message);
    let code = message
        .strip_prefix("Code: ")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse::<u32>().ok());
    let said = format!("ClickHouse answered HTTP {status}: {message}");
    let fatal = |what: &str| Failure::Other(ConnectorError::fatal(format!("{what}: {said}")));
    match code {
        _ if status == 401 || status == 403 => fatal(AUTH_FAILED),
        Some(c) if AUTH_CODES.contains(&c) => fatal(AUTH_FAILED),
        Some(c) if DATA_CODES.contains(&c) => Failure::Data(said),
        Some(c) if SCHEMA_CODES.contains(&c) => fatal("the table does not match the configuration"),
        _ if status >= 500 => Failure::Other(ConnectorError::retryable(said)),
        _ => fatal("request refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(status: u16, body: &str) -> &'static str {
        match classify(status, body) {
            Failure::Data(_) => "data",
            Failure::Other(e) => e.class(),
        }
    }

    #[test]
    fn classifies_clickhouse_answers() {
        // Bodies as ClickHouse 18.16 sends them.
        let wrong_password = "Code: 193, e.displayText() = DB::Exception: Wrong password for user danube, e.what() = DB::Exception\n";
        assert_eq!(class(401, wrong_password), "fatal");
        assert!(
            ConnectorError::from(classify(401, wrong_password))
                .message()
                .contains("authentication failed")
        );
        assert_eq!(class(500, "Code: 516, e.displayText() = x"), "fatal");
        let parse = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \" before: x: (at row 2)\n, e.what() = DB::Exception\n";
        assert_eq!(class(500, parse), "data");
        assert_eq!(
            class(400, "Code: 41, e.displayText() = Cannot parse datetime"),
            "data"
        );
        assert_eq!(
            class(500, "Code: 16, e.displayText() = No such column zz"),
            "fatal"
        );
        assert_eq!(
            class(
                404,
                "Code: 60, e.displayText() = Table default.nosuch doesn't exist."
            ),
            "fatal"
        );
        assert_eq!(
            class(500, "Code: 241, e.displayText() = Memory limit exceeded"),
            "retryable"
        );
        assert_eq!(class(503, "Service Unavailable"), "retryable");
        assert_eq!(
            class(400, "Code: 62, e.displayText() = Syntax error"),
            "fatal"
        );
    }
}
