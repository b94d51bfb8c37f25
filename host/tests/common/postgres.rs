//! A real PostgreSQL 15 server for tests: its own data directory, a free
//! loopback port, a `danube` user with a SCRAM-SHA-256 password and a
//! `danube` database; stopped on drop.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! server and its tools run as the `postgres` user (Debian's package creates
//! it). The test itself queries through `psql` over the server's Unix socket
//! as the superuser (trusted locally); the connector logs in over TCP with
//! the password.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::server::{Server, free_port, read_log};
use super::tls::{make_client_certificate, make_server_certificate};

/// Where Debian's postgresql-15 package puts the server binaries.
const BIN: &str = "/usr/lib/postgresql/15/bin";
pub const USER: &str = "danube";
/// With [`ServerTls::Required`]: a user that logs in with a client
/// certificate (`CERT_USER.pem`, `CERT_USER.key` in [`Postgres::dir`]).
pub const CERT_USER: &str = "danube_cert";
pub const DATABASE: &str = "danube";

/// The columns of the tests' tables of readings (see [`reading`]): every
/// type, a nested path and nullable columns.
pub const READING_COLUMNS: &str = r#"
  [[postgres.routes.columns]]
  column = "device"
  path = "device"
  type = "text"

  [[postgres.routes.columns]]
  column = "seq"
  path = "seq"
  type = "bigint"

  [[postgres.routes.columns]]
  column = "temp"
  path = "reading.temp"
  type = "double"
  nullable = true

  [[postgres.routes.columns]]
  column = "ok"
  path = "ok"
  type = "bool"

  [[postgres.routes.columns]]
  column = "at"
  path = "at"
  type = "timestamp"

  [[postgres.routes.columns]]
  column = "version"
  path = "version"
  type = "int"

  [[postgres.routes.columns]]
  column = "tags"
  path = "tags"
  type = "json"
  nullable = true
"#;

/// Route keys: an auto-created table upserted on (device, seq), with every
/// Danube metadata column.
pub const KEYED: &str = r#"auto_create = true
upsert_key = ["device", "seq"]
metadata = { topic = "danube_topic", offset = "danube_offset", publish_time = "danube_publish_time", producer = "danube_producer" }"#;

/// The payload of reading `seq`, sent by producer pass `version`.
pub fn reading(seq: u64, version: u32) -> serde_json::Value {
    serde_json::json!({
        "device": format!("dev-{}", seq % 8),
        "seq": seq,
        "reading": {"temp": seq as f64 / 10.0},
        "ok": seq.is_multiple_of(2),
        // 2024-05-01T10:00:00Z plus seq seconds, as epoch milliseconds.
        "at": 1_714_557_600_000_u64 + seq * 1000,
        "version": version,
        "tags": {"i": seq},
    })
}

/// A route of readings from `topic` into `table`; `extra` holds more route
/// keys.
pub fn route(topic: &str, subscription: &str, table: &str, extra: &str) -> String {
    format!(
        "[[postgres.routes]]\ntopic = \"{topic}\"\nsubscription = \"{subscription}\"\ntable = \"{table}\"\n{extra}\n{READING_COLUMNS}"
    )
}

/// Whether the server speaks TLS, with a certificate for 127.0.0.1 signed by
/// the CA `ca.pem` in its directory (see [`Postgres::dir`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ServerTls {
    Off,
    /// `ssl = on`; pg_hba.conf takes TCP logins only over TLS (`hostssl`),
    /// [`CERT_USER`]'s by client certificate.
    Required,
}

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    /// The user the server runs as: (uid, gid), or `None` to stay ourselves.
    owner: Option<(u32, u32)>,
    server: Option<Server>,
}

impl Postgres {
    /// Initialises a cluster and starts it; `password` becomes the password
    /// of the `danube` user, which owns the `danube` database.
    pub fn start(password: &str) -> Postgres {
        Postgres::start_with(password, ServerTls::Off)
    }

    /// [`Postgres::start`], speaking TLS as `tls` says.
    pub fn start_with(password: &str, tls: ServerTls) -> Postgres {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        let owner = (unsafe { libc::geteuid() } == 0).then(postgres_user);
        if let Some((uid, gid)) = owner {
            // SAFETY: chown(2) on a directory this test created; the path is NUL-terminated.
            let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(unsafe { libc::chown(path.as_ptr(), uid, gid) }, 0);
        }
        let mut pg = Postgres {
            port,
            dir,
            owner,
            server: None,
        };
        let out = pg
            .command(&format!("{BIN}/initdb"))
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("initdb runs (apt-get install postgresql-15)");
        check("initdb", &out);
        if tls == ServerTls::Required {
            pg.require_tls();
        }
        pg.spawn();
        pg.superuser(
            "postgres",
            &format!("CREATE ROLE {USER} LOGIN PASSWORD '{password}'"),
        );
        pg.superuser(
            "postgres",
            &format!("CREATE DATABASE {DATABASE} OWNER {USER}"),
        );
        if tls == ServerTls::Required {
            pg.superuser("postgres", &format!("CREATE ROLE {CERT_USER} LOGIN"));
            pg.query(&format!("GRANT CREATE ON SCHEMA public TO {CERT_USER}"));
        }
        pg
    }

    /// Makes the certificates, turns TLS on and restricts TCP logins to it.
    fn require_tls(&self) {
        let dir = self.dir.path();
        make_server_certificate(dir);
        make_client_certificate(dir, CERT_USER);
        // The server reads its key only if it owns it and no one else can.
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&key, Some(uid), Some(gid)).unwrap();
        }
        let conf = self.data().join("postgresql.conf");
        let mut settings = std::fs::read_to_string(&conf).unwrap();
        settings += &format!(
            "\nssl = on\nssl_cert_file = '{d}/server.pem'\nssl_key_file = '{d}/server.key'\n\
             ssl_ca_file = '{d}/ca.pem'\n",
            d = dir.display()
        );
        std::fs::write(&conf, settings).unwrap();
        std::fs::write(
            self.data().join("pg_hba.conf"),
            format!(
                "local all all trust\nhostssl all {CERT_USER} 127.0.0.1/32 cert\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .unwrap();
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command run as the server's owner, in its directory.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        command
    }

    /// Starts the server on the existing data directory and waits until it
    /// answers queries.
    pub fn spawn(&mut self) {
        let server = Server::start(
            "PostgreSQL",
            self.command(&format!("{BIN}/postgres"))
                .arg("-D")
                .arg(self.data())
                .args(["-p", &self.port.to_string(), "-k"])
                .arg(self.dir.path())
                // Durability across a crash of the machine is not under test;
                // a clean stop still writes everything.
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]),
            &self.log_file(),
            Duration::from_secs(30),
            || self.answers(),
        );
        self.server = Some(server);
    }

    fn answers(&self) -> bool {
        TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && self
                .psql_as("postgres", "postgres", "SELECT 1")
                .status
                .success()
    }

    /// Stops the server with a fast shutdown (SIGINT): sessions are cut,
    /// committed data stays.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(libc::SIGINT);
        }
    }

    /// Runs `sql` in the `danube` database as the superuser and returns
    /// psql's unaligned output, trimmed.
    pub fn query(&self, sql: &str) -> String {
        self.superuser(DATABASE, sql)
    }

    /// [`Postgres::query`] parsed as a number.
    pub fn count(&self, sql: &str) -> i64 {
        let out = self.query(sql);
        out.parse()
            .unwrap_or_else(|_| panic!("{sql} returned {out:?}"))
    }

    /// Polls `sql` (a count) until it returns `expected` or `deadline`
    /// passes; returns the last value.
    pub fn wait_count(&self, sql: &str, expected: i64, deadline: Duration) -> i64 {
        let end = Instant::now() + deadline;
        loop {
            let n = self.count(sql);
            if n == expected || Instant::now() >= end {
                return n;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn superuser(&self, database: &str, sql: &str) -> String {
        let out = self.psql_as("postgres", database, sql);
        check(&format!("psql {sql:?}"), &out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn psql_as(&self, user: &str, database: &str, sql: &str) -> Output {
        self.command("/usr/bin/psql")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", user, "-d", database])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql runs (apt-get install postgresql-client-15)")
    }

    /// The sandbox grant (plus the `[sandbox]` lines `sandbox`) and the
    /// `[postgres]` table for this server, then `routes` (which may start
    /// with more `[postgres]` keys). The password is left to the
    /// environment, as in a deployment.
    pub fn sink_config(&self, sandbox: &str, routes: &str) -> String {
        self.sink_config_as(USER, sandbox, routes)
    }

    /// [`Postgres::sink_config`] logging in as `user`.
    pub fn sink_config_as(&self, user: &str, sandbox: &str, routes: &str) -> String {
        format!(
            "[sandbox]\nallow = [\"127.0.0.1:{port}\"]\n{sandbox}\n[postgres]\nhost = \"127.0.0.1\"\nport = {port}\n\
             database = \"{DATABASE}\"\nuser = \"{user}\"\n\n{routes}",
            port = self.port
        )
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn log(&self) -> String {
        read_log(&self.log_file())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown (SIGQUIT): nothing is kept after a test.
        if let Some(server) = self.server.take() {
            server.stop(libc::SIGQUIT);
        }
    }
}

/// The uid and gid of the `postgres` user.
fn postgres_user() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a NUL-terminated name; the record is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no `postgres` user: install postgresql-15 (scripts/setup.sh)"
    );
    // SAFETY: pw is non-null and points at libc's static record.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn check(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
