//! `danube-host top` and `danube-host tap NAME`: live views of a running
//! host, read from its management API (`--api`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Deserialize;

use crate::exit;
use crate::observability::Counters;
use crate::observability::tap::{Direction, TappedRecord};

/// Where the host's API is, and how to be let in.
#[derive(Args, Clone)]
pub struct EndpointArgs {
    /// The host's endpoint, HOST:PORT (its log names it: "serving /metrics
    /// ... addr=").
    #[arg(long, env = "DANUBE_HOST_ENDPOINT", default_value = "127.0.0.1:9090")]
    endpoint: String,
    /// A file holding the API's token, when the host asks for one.
    #[arg(long, value_name = "FILE", env = "DANUBE_HOST_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct TopArgs {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Refresh this often, milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

#[derive(Args, Clone)]
pub struct TapArgs {
    /// The connector's name.
    name: String,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Records printed a second at most (1-1000); how many were skipped
    /// is shown.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// Print the API's JSON lines as they come.
    #[arg(long)]
    json: bool,
}

/// A client of one host's API.
struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// Why a request failed, for a person.
enum Failed {
    /// Not reachable now: `top` tries again.
    Unreachable(String),
    /// Wrong token, no API, no such connector: no use trying again.
    Refused(String),
}

impl Client {
    fn new(args: &EndpointArgs, read_timeout: Option<Duration>) -> Result<Client, String> {
        let token = args
            .api_token_file
            .as_deref()
            .map(crate::operations::read_token)
            .transpose()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(3)))
            .timeout_recv_body(read_timeout)
            .build()
            .into();
        Ok(Client {
            base: format!("http://{}", args.endpoint),
            token,
            agent,
        })
    }

    fn get(&self, path: &str) -> Result<ureq::Body, Failed> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = request
            .call()
            .map_err(|e| Failed::Unreachable(format!("{}: {e}", self.base)))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        match status {
            200 => Ok(body),
            404 if path == "/connectors" => Err(Failed::Refused(format!(
                "{} serves no management API: start the host with --api",
                self.base
            ))),
            _ => {
                let text = body.read_to_string().unwrap_or_default();
                let why = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or(text);
                Err(Failed::Refused(format!(
                    "{}{path} answered {status}: {}",
                    self.base,
                    crate::guest_text::printable(&why.chars().take(300).collect::<String>())
                )))
            }
        }
    }
}

#[derive(Deserialize)]
struct Listing {
    connectors: Vec<Summary>,
}

#[derive(Deserialize)]
struct Summary {
    name: String,
    state: String,
    #[serde(default)]
    world: Option<String>,
    #[serde(default)]
    health: Option<Health>,
    counters: Counters,
}

#[derive(Deserialize)]
struct Health {
    status: String,
    detail: String,
}

pub fn top(args: TopArgs) -> ExitCode {
    let client = match Client::new(&args.endpoint, Some(Duration::from_secs(5))) {
        Ok(client) => client,
        Err(message) => return refused(&message),
    };
    let interval = Duration::from_millis(args.interval_ms.max(100));
    let mut last: Option<(Instant, Vec<(String, Counters)>)> = None;
    loop {
        let fetched = client.get("/connectors").and_then(|body| {
            let text = body
                .into_with_config()
                .limit(16 << 20)
                .read_to_string()
                .map_err(|e| Failed::Unreachable(format!("reading /connectors: {e}")))?;
            serde_json::from_str::<Listing>(&text)
                .map_err(|e| Failed::Refused(format!("/connectors is not what top reads: {e}")))
        });
        let now = Instant::now();
        let screen = match fetched {
            Ok(listing) => {
                let screen = render(&args.endpoint.endpoint, &listing, last.as_ref(), now);
                let counters = listing
                    .connectors
                    .into_iter()
                    .map(|c| (c.name, c.counters))
                    .collect();
                last = Some((now, counters));
                screen
            }
            Err(Failed::Unreachable(why)) => format!(
                "danube-host top - {}\n\ncannot reach the host: {why}\ntrying again every {} ms (Ctrl-C quits)\n",
                args.endpoint.endpoint,
                interval.as_millis()
            ),
            Err(Failed::Refused(why)) => return refused(&why),
        };
        // Home and clear, then the screen: one write, no flicker of a
        // half-drawn table.
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[H\x1b[2J{screen}");
        let _ = out.flush();
        drop(out);
        std::thread::sleep(interval);
    }
}

/// One screen of `top`: a line per connector, rates from the previous
/// screen's counters.
fn render(
    endpoint: &str,
    listing: &Listing,
    last: Option<&(Instant, Vec<(String, Counters)>)>,
    now: Instant,
) -> String {
    let rate = |name: &str, of: fn(&Counters) -> u64, current: u64| -> String {
        let Some((at, previous)) = last else {
            return "-".into();
        };
        let Some((_, before)) = previous.iter().find(|(n, _)| n == name) else {
            return "-".into();
        };
        let seconds = now.duration_since(*at).as_secs_f64().max(1e-3);
        format!("{:.0}", current.saturating_sub(of(before)) as f64 / seconds)
    };
    let mut screen = format!(
        "danube-host top - {endpoint} - {} connector(s) (Ctrl-C quits)\n\n",
        listing.connectors.len()
    );
    screen.push_str(&format!(
        "{:<24} {:<7} {:<9} {:<10} {:>9} {:>9} {:>7} {:>6} {:>9} {:>8}  {}\n",
        "CONNECTOR",
        "WORLD",
        "STATE",
        "HEALTH",
        "IN/s",
        "OUT/s",
        "ERRORS",
        "DLQ",
        "IN-FLIGHT",
        "RESTARTS",
        "DETAIL"
    ));
    for c in &listing.connectors {
        let n = &c.counters;
        let (status, detail) = c
            .health
            .as_ref()
            .map_or(("-", ""), |h| (h.status.as_str(), h.detail.as_str()));
        screen.push_str(&format!(
            "{:<24} {:<7} {:<9} {:<10} {:>9} {:>9} {:>7} {:>6} {:>9} {:>8}  {}\n",
            cut(&c.name, 24),
            c.world.as_deref().unwrap_or("-"),
            c.state,
            status,
            rate(&c.name, |c| c.received, n.received),
            rate(&c.name, |c| c.sent, n.sent),
            n.errors,
            n.dead_lettered,
            n.in_flight,
            n.worker_restarts,
            cut(detail, 60)
        ));
    }
    screen
}

fn cut(text: &str, width: usize) -> String {
    let text = crate::guest_text::printable(text);
    match text.chars().count() > width {
        true => format!("{}…", text.chars().take(width - 1).collect::<String>()),
        false => text.into_owned(),
    }
}

#[derive(Deserialize)]
struct TapLine {
    direction: String,
    topic: String,
    key: Option<String>,
    #[serde(default)]
    attributes: std::collections::BTreeMap<String, String>,
    payload: String,
    payload_len: usize,
    truncated: bool,
    skipped: u64,
}

pub fn tap(args: TapArgs) -> ExitCode {
    let client = match Client::new(&args.endpoint, None) {
        Ok(client) => client,
        Err(message) => return refused(&message),
    };
    let name: String = url::form_urlencoded::byte_serialize(args.name.as_bytes()).collect();
    let path = format!("/connectors/{name}/tap?rate={}", args.rate.clamp(1, 1000));
    let body = match client.get(&path) {
        Ok(body) => body,
        Err(Failed::Unreachable(why) | Failed::Refused(why)) => return refused(&why),
    };
    eprintln!(
        "danube-host tap: the records of {} as they flow, {} a second at most (Ctrl-C quits)",
        crate::guest_text::printable(&args.name),
        args.rate
    );
    let mut out = std::io::stdout();
    for line in BufReader::new(body.into_reader()).lines() {
        let Ok(line) = line else { break };
        let shown = match args.json {
            true => line,
            false => match serde_json::from_str::<TapLine>(&line) {
                Ok(record) => human(&record),
                Err(_) => continue,
            },
        };
        if writeln!(out, "{shown}").is_err() {
            break;
        }
    }
    eprintln!("danube-host tap: the host ended the tap");
    ExitCode::from(exit::OK)
}

/// A tapped record as a line for a person: as `danube-host dev` prints
/// taps, and how many were not shown.
fn human(record: &TapLine) -> String {
    let tapped = TappedRecord {
        direction: match record.direction.as_str() {
            "produced" => Direction::Produced,
            _ => Direction::Consumed,
        },
        topic: record.topic.clone(),
        key: record.key.clone(),
        attributes: record
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        payload: record.payload.clone().into_bytes(),
        payload_len: match record.truncated {
            true => record.payload_len,
            false => record.payload.len(),
        },
    };
    match record.skipped {
        0 => tapped.line(),
        n => format!("{}   (+{n} not shown)", tapped.line()),
    }
}

fn refused(message: &str) -> ExitCode {
    eprintln!("danube-host: {message}");
    ExitCode::from(exit::CONFIG)
}
