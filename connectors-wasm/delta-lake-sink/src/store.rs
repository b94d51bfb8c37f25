//! Where a table's files live: a local (or mounted) directory, or an
//! S3-compatible bucket. Both give what Delta's optimistic concurrency needs:
//! a put that creates a log entry only if it is absent.
//!
//! - Local: the entry is written to a temporary file and hard-linked to its
//!   name; the link fails if the name exists, and readers never see half a
//!   file.
//! - S3: `PutObject` with `If-None-Match: *` (AWS S3 since 2024, MinIO,
//!   moto); 412 Precondition Failed means another writer took the version.
//!   Requests are signed with SigV4 by `rusty-s3` (sans-IO presigned URLs,
//!   small, builds for wasm32-wasip2) and sent with the shared ureq agent
//!   (`danube-connector-tls`), path-style (`endpoint/bucket/key`).

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use danube_connect_sdk::ConnectorError;
use danube_connector_tls::TlsFiles;
use danube_connector_tls::http::{Timeouts, agent, handshake_failure};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::config::{Config, shown};

/// Whether a conditional put created the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    Exists,
}

/// A table's storage. Paths are relative to the table's root, `/`-separated.
pub enum Store {
    Local(PathBuf),
    // Boxed: far larger than a path.
    S3(Box<S3>),
}

pub struct S3 {
    bucket: Bucket,
    credentials: Credentials,
    /// Key prefix of the table, without a trailing `/` (may be empty).
    prefix: String,
    agent: ureq::Agent,
    /// `s3://bucket/prefix`, for messages.
    shown: String,
}

/// How long a presigned request stays valid.
const SIGNATURE_TTL: Duration = Duration::from_secs(600);
/// An S3 answer: its status, its body (bounded), how reading it went.
struct Answer {
    status: u16,
    body: Vec<u8>,
    read: std::io::Result<()>,
}

/// Most of an error answer's body read (for its `<Code>`).
const ERROR_READ: u64 = 64 << 10;
/// Largest log entry or listing read (a commit of a batch is kilobytes).
const MAX_READ: u64 = 256 << 20;

impl Store {
    /// The store of the table at `to` (`s3://...` or a directory).
    pub fn open(config: &Config, to: &str) -> Result<Store, ConnectorError> {
        if let Some(rest) = to.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let region = config.s3_region.clone().unwrap_or_default();
            let endpoint = config
                .s3_endpoint
                .clone()
                .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
            let url: url::Url = endpoint.parse().map_err(|e| {
                ConnectorError::config(format!("`s3_endpoint` `{}`: {e}", shown(&endpoint)))
            })?;
            let bucket = Bucket::new(url, UrlStyle::Path, bucket.to_string(), region)
                .map_err(|e| ConnectorError::config(format!("`s3_endpoint`/`to`: {e}")))?;
            let files = TlsFiles {
                ca_file: config.ca_file.as_deref(),
                ..TlsFiles::default()
            };
            let timeouts = Timeouts {
                connect: Duration::from_secs(10),
                step: Duration::from_secs(config.request_timeout_secs.max(1)),
            };
            let agent = agent(&files, timeouts).map_err(ConnectorError::config)?;
            Ok(Store::S3(Box::new(S3 {
                bucket,
                credentials: Credentials::new(
                    config.s3_access_key_id.clone(),
                    config.s3_secret_access_key.clone(),
                ),
                prefix: prefix.trim_matches('/').to_string(),
                agent,
                shown: shown(to),
            })))
        } else {
            let path = to.strip_prefix("file://").unwrap_or(to);
            Ok(Store::Local(PathBuf::from(path)))
        }
    }

    /// The table's location, for messages.
    pub fn shown(&self) -> String {
        match self {
            Store::Local(root) => root.display().to_string(),
            Store::S3(s3) => s3.shown.clone(),
        }
    }

    /// The file's bytes, `None` if it does not exist.
    pub fn get(&self, path: &str) -> Result<Option<Vec<u8>>, ConnectorError> {
        match self {
            Store::Local(root) => match std::fs::read(root.join(path)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(local_error("reading", &root.join(path), e)),
            },
            Store::S3(s3) => s3.get(path),
        }
    }

    /// Writes the file, replacing any (data files: names are unique).
    pub fn put(&self, path: &str, bytes: &[u8]) -> Result<(), ConnectorError> {
        match self {
            Store::Local(root) => {
                let target = root.join(path);
                let tmp = temporary(&target);
                write_file(&tmp, bytes)?;
                std::fs::rename(&tmp, &target).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    local_error("renaming into", &target, e)
                })
            }
            Store::S3(s3) => s3.put(path, bytes, false).map(|_| ()),
        }
    }

    /// Creates the file only if it does not exist.
    pub fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<Put, ConnectorError> {
        match self {
            Store::Local(root) => {
                let target = root.join(path);
                let tmp = temporary(&target);
                write_file(&tmp, bytes)?;
                let linked = std::fs::hard_link(&tmp, &target);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => Ok(Put::Created),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Put::Exists),
                    Err(e) => Err(local_error("creating", &target, e)),
                }
            }
            Store::S3(s3) => s3.put(path, bytes, true),
        }
    }

    /// The files under the directory `dir`, as paths from the table's root
    /// (none when it does not exist).
    pub fn list(&self, dir: &str) -> Result<Vec<String>, ConnectorError> {
        match self {
            Store::Local(root) => {
                let full = root.join(dir);
                let entries = match std::fs::read_dir(&full) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(local_error("listing", &full, e)),
                };
                let mut paths = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| local_error("listing", &full, e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    // Files being written are hidden until renamed.
                    if !name.starts_with('.') {
                        paths.push(format!("{dir}/{name}"));
                    }
                }
                paths.sort();
                Ok(paths)
            }
            Store::S3(s3) => s3.list(dir),
        }
    }

    /// Removes the file; one already gone is fine.
    pub fn delete(&self, path: &str) -> Result<(), ConnectorError> {
        match self {
            Store::Local(root) => match std::fs::remove_file(root.join(path)) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    Err(local_error("removing", &root.join(path), e))
                }
                _ => Ok(()),
            },
            Store::S3(s3) => s3.delete(path),
        }
    }

    /// Creates the directories a file at `path` needs (local only).
    pub fn make_dirs(&self, path: &str) -> Result<(), ConnectorError> {
        if let Store::Local(root) = self {
            let full = root.join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| local_error("creating the directory", parent, e))?;
            }
        }
        Ok(())
    }
}

fn temporary(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ConnectorError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| local_error("creating", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| {
            let _ = std::fs::remove_file(path);
            local_error("writing", path, e)
        })
}

/// A local file error: a directory not granted is for the operator to fix;
/// anything else (a full disk, a mount away) may pass.
fn local_error(doing: &str, path: &Path, e: std::io::Error) -> ConnectorError {
    let message = format!("{doing} {}: {e}", path.display());
    match e.kind() {
        ErrorKind::PermissionDenied => ConnectorError::fatal(format!(
            "{message}; grant the table's directory with [sandbox] dirs"
        )),
        _ => ConnectorError::retryable(message),
    }
}

impl S3 {
    fn key(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }

    /// The answer to a request sent (`sent`): its status and up to `limit`
    /// bytes of its body, with how reading them went.
    fn answer(
        &self,
        method: &str,
        key: &str,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        limit: u64,
    ) -> Result<Answer, ConnectorError> {
        let response = sent.map_err(|e| self.transport(method, key, e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        let read = response
            .into_body()
            .into_reader()
            .take(limit)
            .read_to_end(&mut body)
            .map(drop);
        Ok(Answer { status, body, read })
    }

    fn get(&self, path: &str) -> Result<Option<Vec<u8>>, ConnectorError> {
        let key = self.key(path);
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGNATURE_TTL);
        let sent = self.agent.get(url.as_str()).call();
        let answer = self.answer("GET", &key, sent, MAX_READ)?;
        match answer.status {
            200 => {
                answer.read.map_err(|e| {
                    ConnectorError::retryable(format!("reading {} from S3: {e}", self.at(&key)))
                })?;
                Ok(Some(answer.body))
            }
            404 => Ok(None),
            status => Err(self.refused("GET", &key, status, &answer.body)),
        }
    }

    /// `ListObjectsV2` under `dir/`, page by page.
    fn list(&self, dir: &str) -> Result<Vec<String>, ConnectorError> {
        let prefix = format!("{}/", self.key(dir));
        let mut paths = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix.as_str());
            if let Some(token) = &token {
                action.with_continuation_token(token.as_str());
            }
            let url = action.sign(SIGNATURE_TTL);
            let sent = self.agent.get(url.as_str()).call();
            let answer = self.answer("LIST", &prefix, sent, MAX_READ)?;
            if answer.status != 200 {
                return Err(self.refused("LIST", &prefix, answer.status, &answer.body));
            }
            answer.read.map_err(|e| {
                ConnectorError::retryable(format!("listing {} in S3: {e}", self.at(&prefix)))
            })?;
            let page =
                rusty_s3::actions::ListObjectsV2::parse_response(&answer.body).map_err(|e| {
                    ConnectorError::retryable(format!(
                        "listing {}: an answer that is not a listing ({e})",
                        self.at(&prefix)
                    ))
                })?;
            for object in page.contents {
                // Keys come URL-encoded (the action asks for it).
                let key = percent_encoding::percent_decode_str(&object.key).decode_utf8_lossy();
                if let Some(name) = key.strip_prefix(prefix.as_str()) {
                    paths.push(format!("{dir}/{name}"));
                }
            }
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(paths),
            }
        }
    }

    fn delete(&self, path: &str) -> Result<(), ConnectorError> {
        let key = self.key(path);
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), &key)
            .sign(SIGNATURE_TTL);
        let sent = self.agent.delete(url.as_str()).call();
        let answer = self.answer("DELETE", &key, sent, ERROR_READ)?;
        match answer.status {
            200..=299 | 404 => Ok(()),
            status => Err(self.refused("DELETE", &key, status, &answer.body)),
        }
    }

    fn put(&self, path: &str, bytes: &[u8], if_absent: bool) -> Result<Put, ConnectorError> {
        let key = self.key(path);
        let mut action = self.bucket.put_object(Some(&self.credentials), &key);
        if if_absent {
            action.headers_mut().insert("if-none-match", "*");
        }
        let url = action.sign(SIGNATURE_TTL);
        let mut request = self.agent.put(url.as_str());
        if if_absent {
            request = request.header("If-None-Match", "*");
        }
        let answer = self.answer("PUT", &key, request.send(bytes), ERROR_READ)?;
        match answer.status {
            200..=299 => Ok(Put::Created),
            // 409 ConditionalRequestConflict: a concurrent conditional
            // write to the same key is in progress; the loser re-reads.
            412 | 409 if if_absent => Ok(Put::Exists),
            status => Err(self.refused("PUT", &key, status, &answer.body)),
        }
    }

    fn at(&self, key: &str) -> String {
        shown(&format!("s3://{}/{key}", self.bucket.name()))
    }

    /// A request that got no answer: a refused certificate is for the
    /// operator; anything else (refused connection, timeout) may pass.
    fn transport(&self, method: &str, key: &str, e: ureq::Error) -> ConnectorError {
        let message = format!("{method} {}: {e}", self.at(key));
        match handshake_failure(&e) {
            Some(tls) => ConnectorError::fatal(format!("{message} (TLS: {tls}); check `ca_file`")),
            None => ConnectorError::retryable(message),
        }
    }

    /// An answer other than success: credentials refused or a missing
    /// bucket stop the connector; throttling and server errors are retried.
    fn refused(&self, method: &str, key: &str, status: u16, body: &[u8]) -> ConnectorError {
        let code = s3_error_code(body);
        let message = format!(
            "{method} {} answered HTTP {status}{}",
            self.at(key),
            code.map(|c| format!(" ({c})")).unwrap_or_default()
        );
        match status {
            401 | 403 => ConnectorError::fatal(format!(
                "{message}: check `s3_access_key_id` / `s3_secret_access_key` and the bucket's \
                 policy"
            )),
            404 => ConnectorError::fatal(format!("{message}: does the bucket exist?")),
            400 | 405 | 411 | 501 => ConnectorError::fatal(message),
            _ => ConnectorError::retryable(message),
        }
    }
}

/// The `<Code>` of an S3 error answer, bounded.
fn s3_error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    let code = &text[start..end];
    (code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric())).then(|| code.to_string())
}
