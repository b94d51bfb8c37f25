//! The guest: instantiation and typed calls.
//!
//! Everything outside the worker speaks the host's own
//! [`contract`](crate::contract) types; the conversions from and to the
//! generated [`bindings`](crate::bindings) live here, at the edge.

use anyhow::bail;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

use super::batch::{ProcessBatch, SinkRecordView};
use super::engine::first_line;
use super::state::GuestState;
use crate::capability::SandboxLimits;
use crate::contract::{self, CallOutcome, ModuleInfo, Opened, World};
use crate::guest_text::{self, lines, one_line};

/// The WIT package version this host serves.
pub const WIT_VERSION: &str = "0.1.0";
const SOURCE_EXPORT: &str = "danube:connect/source-connector";
const SINK_EXPORT: &str = "danube:connect/sink-connector";
const INGRESS_EXPORT: &str = "danube:connect/ingress-connector";

use crate::bindings::types as wit;
use crate::bindings::{configuration, ingress_connector, sink_connector, source_connector};

/// Which world a component implements, read from its exports without running
/// it. A module built for another version of the contract is named as such.
pub fn detect_world(engine: &Engine, component: &Component) -> anyhow::Result<World> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    for name in &exports {
        for (prefix, world) in [
            (SOURCE_EXPORT, World::Source),
            (SINK_EXPORT, World::Sink),
            (INGRESS_EXPORT, World::Ingress),
        ] {
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let version = rest.strip_prefix('@').unwrap_or("(unversioned)");
            if version != WIT_VERSION {
                bail!(
                    "the module was built for danube:connect@{version}, but this host serves danube:connect@{WIT_VERSION}; rebuild the connector against this host's WIT or run a host that serves {version}"
                );
            }
            return Ok(world);
        }
    }
    bail!(
        "the module exports no connector interface ({SOURCE_EXPORT}, {SINK_EXPORT} or {INGRESS_EXPORT}); it exports [{}]. Is it a connector built against the danube:connect WIT?",
        exports.join(", ")
    )
}

/// A running component instance of either world, with its store.
pub struct Guest {
    store: Store<GuestState>,
    connector: Connector,
    /// `None` for a module built before the `configuration` export existed.
    configuration: Option<configuration::Guest>,
}

/// The world's connector export.
enum Connector {
    Source(source_connector::Guest),
    /// A sink's `process-batch` is called through [`ProcessBatch`], with
    /// records borrowed from their frame.
    Sink(sink_connector::Guest, ProcessBatch),
    Ingress(ingress_connector::Guest),
}

/// Where [`Connector`]'s functions are, found before instantiating.
enum ConnectorIndices {
    Source(source_connector::GuestIndices),
    Sink(sink_connector::GuestIndices),
    Ingress(ingress_connector::GuestIndices),
}

impl Guest {
    /// Links the host imports and WASI, and instantiates the component.
    pub fn instantiate(
        engine: &Engine,
        component: &Component,
        world: World,
        state: GuestState,
    ) -> anyhow::Result<Guest> {
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation runs the guest's start-up code, which gets one
        // call's worth of time and fuel too.
        store.epoch_deadline_trap();
        arm(&mut store)?;
        let mut linker: Linker<GuestState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        crate::capability::network::add_to_linker(&mut linker)?;
        crate::capability::add_to_linker(&mut linker)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(explain_link_error)?;
        // Each export is found on its own, so that the optional one may be
        // missing.
        let connector = match world {
            World::Source => ConnectorIndices::Source(source_connector::GuestIndices::new(&pre)?),
            World::Sink => ConnectorIndices::Sink(sink_connector::GuestIndices::new(&pre)?),
            World::Ingress => {
                ConnectorIndices::Ingress(ingress_connector::GuestIndices::new(&pre)?)
            }
        };
        let configuration = configuration::GuestIndices::new(&pre).ok();
        let instance = pre.instantiate(&mut store).map_err(explain_link_error)?;
        let connector = match connector {
            ConnectorIndices::Source(source) => {
                Connector::Source(source.load(&mut store, &instance)?)
            }
            ConnectorIndices::Sink(sink) => Connector::Sink(
                sink.load(&mut store, &instance)?,
                ProcessBatch::find(
                    &mut store,
                    &instance,
                    &format!("{SINK_EXPORT}@{WIT_VERSION}"),
                )?,
            ),
            ConnectorIndices::Ingress(ingress) => {
                Connector::Ingress(ingress.load(&mut store, &instance)?)
            }
        };
        let configuration = configuration
            .map(|c| c.load(&mut store, &instance))
            .transpose()
            .map_err(|e| anyhow::anyhow!("the module's `configuration` export does not match danube:connect@{WIT_VERSION}: {e}"))?;
        Ok(Guest {
            store,
            connector,
            configuration,
        })
    }

    pub fn world(&self) -> World {
        match self.connector {
            Connector::Source(_) => World::Source,
            Connector::Sink(..) => World::Sink,
            Connector::Ingress(_) => World::Ingress,
        }
    }

    pub fn state_mut(&mut self) -> &mut GuestState {
        self.store.data_mut()
    }

    /// Calls `describe`, and `configuration.schema` where the module has it.
    pub fn describe(&mut self) -> wasmtime::Result<ModuleInfo> {
        arm(&mut self.store)?;
        let info = match &self.connector {
            Connector::Source(i) => i.call_describe(&mut self.store)?,
            Connector::Sink(i, _) => i.call_describe(&mut self.store)?,
            Connector::Ingress(i) => i.call_describe(&mut self.store)?,
        };
        let config_schema = match &self.configuration {
            Some(c) => {
                arm(&mut self.store)?;
                c.call_schema(&mut self.store)?
            }
            None => None,
        };
        if let Some(schema) = &config_schema
            && schema.len() > guest_text::CONFIG_SCHEMA
        {
            wasmtime::bail!(
                "the module's configuration schema is {} bytes, more than the host's {}; report it to the connector's authors",
                schema.len(),
                guest_text::CONFIG_SCHEMA
            );
        }
        Ok(ModuleInfo {
            world: self.world(),
            wit_version: WIT_VERSION.into(),
            name: one_line(info.name, guest_text::NAME),
            version: one_line(info.version, guest_text::NAME),
            description: lines(info.description, guest_text::DESCRIPTION),
            config_example: lines(info.config_example, guest_text::CONFIG_EXAMPLE),
            config_schema,
        })
    }

    /// Runs one call. `Err` is a trap (panic, time or memory limit): the
    /// instance must not be used again.
    pub fn call(
        &mut self,
        call: contract::Call<SinkRecordView<'_>>,
    ) -> wasmtime::Result<CallOutcome> {
        use contract::Call;
        arm(&mut self.store)?;
        let store = &mut self.store;
        let outcome = match (&self.connector, call) {
            (Connector::Source(i), Call::Open { config_json }) => {
                outcome(i.call_open(store, &config_json)?, |configs| {
                    CallOutcome::Opened(Opened::Source(
                        configs.into_iter().map(from_producer_config).collect(),
                    ))
                })
            }
            (Connector::Source(i), Call::Poll { max, timeout_ms }) => {
                outcome(i.call_poll(store, max, timeout_ms)?, |records| {
                    checked_records("poll", records, max, "poll's `max`")
                        .map_or_else(|e| e, CallOutcome::Polled)
                })
            }
            (Connector::Source(i), Call::Commit { offsets }) => {
                let offsets: Vec<wit::Offset> = offsets
                    .into_iter()
                    .map(|o| wit::Offset {
                        stream: o.stream,
                        position: o.position,
                    })
                    .collect();
                outcome(i.call_commit(store, &offsets)?, |()| CallOutcome::Done)
            }
            (Connector::Source(i), Call::Health) => health_outcome(i.call_health(store)?),
            (Connector::Source(i), Call::Close) => {
                i.call_close(store)?;
                CallOutcome::Done
            }
            (Connector::Sink(i, _), Call::Open { config_json }) => {
                outcome(i.call_open(store, &config_json)?, |configs| {
                    CallOutcome::Opened(Opened::Sink(
                        configs.into_iter().map(from_consumer_config).collect(),
                    ))
                })
            }
            (Connector::Sink(_, process_batch), Call::ProcessBatch { records }) => {
                outcome(process_batch.call(store, &records)?, |failures| {
                    CallOutcome::Processed(
                        failures
                            .into_iter()
                            .map(|f| contract::RecordFailure {
                                index: f.index,
                                error: from_error(f.error),
                            })
                            .collect(),
                    )
                })
            }
            (Connector::Sink(i, _), Call::Health) => health_outcome(i.call_health(store)?),
            (Connector::Sink(i, _), Call::Close) => {
                i.call_close(store)?;
                CallOutcome::Done
            }
            (Connector::Ingress(i), Call::Open { config_json }) => {
                outcome(i.call_open(store, &config_json)?, |setup| {
                    CallOutcome::Opened(Opened::Ingress(contract::IngressSetup {
                        producers: setup
                            .producers
                            .into_iter()
                            .map(from_producer_config)
                            .collect(),
                        routes: setup
                            .routes
                            .into_iter()
                            .map(|r| contract::IngressRoute {
                                path: r.path,
                                requests_per_second: r.requests_per_second,
                                burst: r.burst,
                            })
                            .collect(),
                    }))
                })
            }
            (Connector::Ingress(i), Call::Handle { request, max }) => {
                let request = wit::HttpRequest {
                    method: request.method,
                    path: request.path,
                    query: request.query,
                    headers: request.headers,
                    body: request.body,
                    remote_address: request.remote_address,
                };
                outcome(i.call_handle(store, &request)?, |records| {
                    checked_records("handle", records, max, "[processing] batch_size")
                        .map_or_else(|e| e, CallOutcome::Handled)
                })
            }
            (Connector::Ingress(i), Call::Health) => health_outcome(i.call_health(store)?),
            (Connector::Ingress(i), Call::Close) => {
                i.call_close(store)?;
                CallOutcome::Done
            }
            (_, call) => CallOutcome::Error(contract::ConnectorError::Fatal(format!(
                "a {} connector has no `{}` function",
                self.world(),
                call.kind()
            ))),
        };
        Ok(outcome)
    }
}

/// Gives the next call its time and, with `[sandbox] fuel`, its fuel.
fn arm(store: &mut Store<GuestState>) -> wasmtime::Result<()> {
    let ticks = store.data().call_ticks;
    store.set_epoch_deadline(ticks);
    if let Some(fuel) = store.data().fuel {
        store.set_fuel(fuel)?;
    }
    Ok(())
}

fn outcome<T>(
    result: Result<T, wit::ConnectorError>,
    ok: impl FnOnce(T) -> CallOutcome,
) -> CallOutcome {
    match result {
        Ok(v) => ok(v),
        Err(e) => CallOutcome::Error(from_error(e)),
    }
}

fn health_outcome(result: Result<(), String>) -> CallOutcome {
    match result {
        Ok(()) => CallOutcome::Done,
        Err(e) => CallOutcome::Error(contract::ConnectorError::Retryable(one_line(
            e,
            guest_text::MESSAGE,
        ))),
    }
}

/// The records `call` (`poll` or `handle`) returned, or a fatal error when
/// the guest returned more than `max` (set by `bound`; the host's
/// in-flight bound counts on it), or a record whose attributes and key
/// exceed [`guest_text::ATTRIBUTES`] (the host holds them until the broker
/// acknowledges). A guest that does either is broken. Its records are not
/// published; nothing was committed for them, so a restarted connector
/// reads them again (and a sender is not answered 2xx).
fn checked_records(
    call: &str,
    records: Vec<wit::SourceRecord>,
    max: u32,
    bound: &str,
) -> Result<Vec<contract::SourceRecord>, CallOutcome> {
    let broken = |why: String| {
        CallOutcome::Error(contract::ConnectorError::Fatal(format!(
            "{why}; the connector breaks the contract, report it to its authors"
        )))
    };
    if records.len() > max as usize {
        return Err(broken(format!(
            "{call} returned {} records when asked for at most {max} ({bound})",
            records.len()
        )));
    }
    for record in &records {
        let metadata: usize = record.key.as_ref().map_or(0, String::len)
            + record
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if metadata > guest_text::ATTRIBUTES {
            return Err(broken(format!(
                "{call} returned a record for {} with {metadata} bytes of key and attributes, more than the host's {} bytes",
                one_line(record.topic.clone(), guest_text::NAME),
                guest_text::ATTRIBUTES
            )));
        }
    }
    Ok(records.into_iter().map(from_source_record).collect())
}

/// Link errors name WIT paths; say what they mean for the user.
fn explain_link_error(e: wasmtime::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    match text.split('`').nth(1) {
        Some(import) if text.contains("matching implementation was not found") => {
            anyhow::anyhow!(
                "the module imports `{import}`, which this host does not provide (it provides WASI 0.2 and the imports of danube:connect@{WIT_VERSION})"
            )
        }
        _ => anyhow::anyhow!("cannot instantiate the module: {}", first_line(&text)),
    }
}

/// Describes a trap for people: a timeout, a memory limit or the guest's own
/// panic message (from its stderr tail).
pub fn describe_trap(e: &wasmtime::Error, limits: &SandboxLimits, stderr_tail: &str) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            return format!(
                "the guest did not return within [sandbox] call_timeout_ms = {} and was stopped",
                limits.call_timeout_ms
            );
        }
        Some(wasmtime::Trap::OutOfFuel) => {
            return format!(
                "the guest used up its [sandbox] fuel = {} for one call and was stopped",
                limits.fuel.unwrap_or_default()
            );
        }
        _ => {}
    }
    let cause = e.root_cause().to_string();
    // `StoreLimits` with `trap_on_grow_failure` reports a refused growth so.
    if cause.contains("forcing trap when growing memory") {
        return "the guest exceeded its memory limit ([sandbox] memory_mb)".into();
    }
    match panic_message(stderr_tail) {
        Some(panic) => format!("the guest panicked: {panic}"),
        None => format!("the guest trapped: {}", first_line(&cause)),
    }
}

/// The last Rust panic report in a guest's stderr, on one line, without the
/// note about RUST_BACKTRACE (the guest has no environment to set it in).
fn panic_message(stderr_tail: &str) -> Option<String> {
    let start = stderr_tail.rfind("panicked at")?;
    let report: Vec<&str> = stderr_tail[start..]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note:"))
        .collect();
    Some(report.join(" "))
}

fn from_error(e: wit::ConnectorError) -> contract::ConnectorError {
    use contract::ConnectorError as P;
    let text = |m: String| one_line(m, guest_text::MESSAGE);
    match e {
        wit::ConnectorError::Retryable(m) => P::Retryable(text(m)),
        wit::ConnectorError::InvalidData(m) => P::InvalidData(text(m)),
        wit::ConnectorError::Fatal(m) => P::Fatal(text(m)),
        wit::ConnectorError::Config(m) => P::Config(text(m)),
    }
}

fn from_producer_config(c: wit::ProducerConfig) -> contract::ProducerConfig {
    contract::ProducerConfig {
        topic: c.topic,
        partitions: c.partitions,
        reliable: c.reliable,
        schema_subject: c.schema_subject,
    }
}

fn from_consumer_config(c: wit::ConsumerConfig) -> contract::ConsumerConfig {
    use contract::SubscriptionType as P;
    contract::ConsumerConfig {
        topic: c.topic,
        subscription: c.subscription,
        subscription_type: match c.subscription_type {
            wit::SubscriptionType::Exclusive => P::Exclusive,
            wit::SubscriptionType::Shared => P::Shared,
            wit::SubscriptionType::Failover => P::Failover,
            wit::SubscriptionType::KeyShared => P::KeyShared,
        },
        expected_schema_subject: c.expected_schema_subject,
        decode_avro: c.decode_avro,
    }
}

fn from_source_record(r: wit::SourceRecord) -> contract::SourceRecord {
    contract::SourceRecord {
        topic: r.topic,
        payload: r.payload,
        attributes: r.attributes,
        key: r.key,
        offset: r.offset.map(|o| contract::Offset {
            stream: o.stream,
            position: o.position,
        }),
    }
}
