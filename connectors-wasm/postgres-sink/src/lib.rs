//! `postgres-sink`: a sink connector that writes records consumed from Danube
//! into PostgreSQL tables, one idempotent batched upsert per table and batch.
//! See README.md.

mod config;
mod conn;
mod table;

use std::collections::HashMap;

use danube_connect_sdk::{
    BatchOutcome, ConnectorError, ConnectorInfo, ConsumerConfig, Sink, SinkRecord, debug, info,
    metrics, warn,
};

use crate::config::{CONFIG_EXAMPLE, Config, Route, Server};
use crate::conn::{Connection, DbError, ErrorClass, PgError};
use crate::table::{Row, Table};

pub struct PostgresSink {
    session: Session,
    routes: Vec<Route>,
}

/// The server and the session with it, opened on demand.
struct Session {
    server: Server,
    /// The open session; `None` until the next call connects (again).
    conn: Option<Connection>,
    /// Whether the `auto_create` tables were created (once per run).
    tables_ready: bool,
}

impl Session {
    /// The open session, connecting (and creating `routes`' tables the first
    /// time) if needed.
    fn connection(&mut self, routes: &[Route]) -> Result<&mut Connection, ConnectorError> {
        if self.conn.is_none() {
            let server = &self.server;
            let mut conn = Connection::connect(server).map_err(|e| error(server, &e, None))?;
            if !self.tables_ready {
                for route in routes.iter().filter(|r| r.auto_create) {
                    conn.simple(&route.table.create_sql)
                        .map_err(|e| error(server, &e, Some(&route.table)))?;
                }
                self.tables_ready = true;
            }
            info!(
                "connected to PostgreSQL at {}:{} as {}",
                server.host, server.port, server.user
            );
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }
}

/// The connector error for a failure outside the rows themselves; `table`
/// names the table the statement was about.
fn error(server: &Server, e: &PgError, table: Option<&Table>) -> ConnectorError {
    let on = table.map_or(String::new(), |t| format!(" (table {})", t.name));
    match e {
        PgError::Connection(m) => ConnectorError::retryable(format!(
            "PostgreSQL at {}:{}{on}: {m}; connecting again at the next attempt",
            server.host, server.port
        )),
        PgError::Auth(m) => authentication(server, m),
        PgError::Encoding(m) => ConnectorError::fatal(format!("PostgreSQL{on}: {m}")),
        PgError::Tls(m) => ConnectorError::config(format!(
            "PostgreSQL at {}:{}: {m}",
            server.host, server.port
        )),
        PgError::Server(db) => match db.class() {
            // No pg_hba.conf line matches (28000): with `hostssl` lines
            // only, a plain connection is refused this way.
            ErrorClass::Authentication if db.code == "28000" && server.tls.is_none() => {
                authentication(
                    server,
                    &format!(
                        "{db}; if the server accepts only TLS connections, set sslmode = verify-full (or require)"
                    ),
                )
            }
            ErrorClass::Authentication => authentication(server, &db.to_string()),
            ErrorClass::Transient => {
                ConnectorError::retryable(format!("PostgreSQL is not available{on}: {db}"))
            }
            ErrorClass::Data | ErrorClass::Other => ConnectorError::fatal(format!(
                "PostgreSQL refused a statement{on}: {db}{}",
                hint(db)
            )),
        },
    }
}

impl PostgresSink {
    /// Writes `rows` (record index, row) into `table` with one statement;
    /// if the server refuses the data, halves the rows until the refused
    /// records are found and writes the rest. Returns the refused records
    /// with the server's reason.
    fn write(
        conn: &mut Connection,
        table: &Table,
        rows: &[(usize, Row)],
    ) -> Result<Vec<(usize, DbError)>, PgError> {
        let refs: Vec<&Row> = rows.iter().map(|(_, row)| row).collect();
        let params = table
            .params(&refs)
            .map_err(|e| PgError::Encoding(format!("encoding parameters: {e}")))?;
        match conn.execute(&table.insert_sql, &table.param_types(), &params) {
            Ok(_) => Ok(Vec::new()),
            Err(PgError::Server(e)) if e.class() == ErrorClass::Data => {
                if let [(index, _)] = rows {
                    return Ok(vec![(*index, e)]);
                }
                let (left, right) = rows.split_at(rows.len() / 2);
                let mut refused = Self::write(conn, table, left)?;
                refused.extend(Self::write(conn, table, right)?);
                Ok(refused)
            }
            Err(e) => Err(e),
        }
    }
}

fn authentication(server: &Server, why: &str) -> ConnectorError {
    ConnectorError::fatal(format!(
        "authentication to PostgreSQL at {}:{} as user {:?} failed: {why}; check `user` and `password` \
         (env POSTGRES_PASSWORD) and the server's pg_hba.conf",
        server.host, server.port, server.user
    ))
}

/// What to do about the errors an operator meets first.
fn hint(db: &DbError) -> &'static str {
    match db.code.as_str() {
        "42P01" => "; create the table or set `auto_create = true`",
        "42703" => "; the table lacks a mapped column: add it or fix `columns`",
        "42P10" => {
            "; the table needs a primary key or unique index on exactly the `upsert_key` columns"
        }
        "3D000" => "; create the database or fix `database`",
        "42501" => "; grant the user INSERT and UPDATE on the table (and CREATE for auto_create)",
        _ => "",
    }
}

/// Keeps the last of the rows that share an upsert key: one statement may
/// not update the same row twice, and the later record is the newer one.
/// The earlier ones count as written (they were superseded).
fn last_per_key(table: &Table, rows: Vec<(usize, Row)>) -> Vec<(usize, Row)> {
    let mut last: HashMap<Vec<u8>, usize> = HashMap::with_capacity(rows.len());
    for (position, (_, row)) in rows.iter().enumerate() {
        last.insert(table.key_of(row), position);
    }
    if last.len() == rows.len() {
        return rows;
    }
    let keep: std::collections::HashSet<usize> = last.into_values().collect();
    rows.into_iter()
        .enumerate()
        .filter(|(position, _)| keep.contains(position))
        .map(|(_, row)| row)
        .collect()
}

impl Sink for PostgresSink {
    type Config = Config;

    fn describe() -> ConnectorInfo {
        ConnectorInfo::new(
            "Writes JSON records into PostgreSQL tables: columns mapped from payload paths and \
             Danube metadata, one batched upsert per table and batch, idempotent under redelivery.",
            CONFIG_EXAMPLE,
        )
    }

    fn open(config: Config) -> Result<(Self, Vec<ConsumerConfig>), ConnectorError> {
        let settings = config.into_settings()?;
        let consumers = settings.routes.iter().map(Route::consumer).collect();
        let mut sink = PostgresSink {
            session: Session {
                server: settings.server,
                conn: None,
                tables_ready: false,
            },
            routes: settings.routes,
        };
        // A server that is down now may be up for the first batch; anything
        // else (authentication, a statement refused) stops the connector now.
        match sink.session.connection(&sink.routes) {
            Ok(_) => {}
            Err(e) if e.is_retryable() => warn!("{}; trying again at the first batch", e.message()),
            Err(e) => return Err(e),
        }
        Ok((sink, consumers))
    }

    fn process_batch(&mut self, records: Vec<SinkRecord>) -> Result<BatchOutcome, ConnectorError> {
        let mut outcome = BatchOutcome::new();
        let mut per_route: Vec<Vec<(usize, Row)>> =
            self.routes.iter().map(|_| Vec::new()).collect();
        for (index, record) in records.iter().enumerate() {
            let Some(r) = self.routes.iter().position(|r| r.takes(record.topic())) else {
                outcome.fail(
                    index,
                    ConnectorError::invalid_data(format!("no route for topic {}", record.topic())),
                );
                continue;
            };
            match self.routes[r].table.row(record) {
                Ok(row) => per_route[r].push((index, row)),
                Err(e) => outcome.fail(index, e),
            }
        }
        for (r, rows) in per_route.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let table = &self.routes[r].table;
            let rows = last_per_key(table, rows);
            let conn = self.session.connection(&self.routes)?;
            match Self::write(conn, table, &rows) {
                Ok(refused) => {
                    let labels = [("table", table.name.as_str())];
                    metrics::counter_add(
                        "postgres_sink_rows_written_total",
                        (rows.len() - refused.len()) as u64,
                        &labels,
                    );
                    metrics::counter_add(
                        "postgres_sink_rows_refused_total",
                        refused.len() as u64,
                        &labels,
                    );
                    for (index, e) in refused {
                        outcome.fail(
                            index,
                            ConnectorError::invalid_data(format!(
                                "PostgreSQL refused the row for table {}: {e}",
                                table.name
                            )),
                        );
                    }
                }
                Err(e) => {
                    // Whatever went wrong, the next attempt starts a fresh session.
                    self.session.conn = None;
                    return Err(error(&self.session.server, &e, Some(table)));
                }
            }
        }
        debug!(
            "wrote a batch of {} records, {} refused",
            records.len(),
            outcome.failures().len()
        );
        Ok(outcome)
    }

    fn health(&mut self) -> Result<(), String> {
        let conn = self
            .session
            .connection(&self.routes)
            .map_err(|e| e.message().to_string())?;
        conn.simple("SELECT 1").map_err(|e| {
            self.session.conn = None;
            e.to_string()
        })
    }

    fn close(&mut self) {
        if let Some(conn) = self.session.conn.take() {
            conn.terminate();
        }
    }
}

danube_connect_sdk::export_sink!(PostgresSink);
