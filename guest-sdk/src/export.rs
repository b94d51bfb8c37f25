//! Glue between the generated bindings and the SDK's traits. Used by the
//! export macros only; not part of the public API.

use std::any::Any;
use std::cell::RefCell;
use std::time::Duration;

use crate::bindings::ingress::danube::connect::types as ingress_wit;
use crate::bindings::sink::danube::connect::types as sink_wit;
use crate::bindings::source::danube::connect::types as source_wit;
use crate::config::parse_config;
use crate::{
    ConnectorError, ConnectorInfo, ConsumerConfig, HttpRequest, Ingress, Offset, ProducerConfig,
    SchemaRef, Sink, SinkRecord, Source, SourceRecord, SubscriptionType,
};

/// The lifecycle of the one connector instance a component holds.
enum Slot {
    NotOpened,
    Open(Box<dyn Any>),
    Closed,
}

thread_local! {
    static INSTANCE: RefCell<Slot> = const { RefCell::new(Slot::NotOpened) };
}

/// Runs `f` on the open instance, or fails with a fatal error naming `call`.
fn with_instance<T: 'static, R>(
    call: &str,
    f: impl FnOnce(&mut T) -> Result<R, ConnectorError>,
) -> Result<R, ConnectorError> {
    INSTANCE.with(|slot| match &mut *slot.borrow_mut() {
        Slot::Open(any) => match any.downcast_mut::<T>() {
            Some(instance) => f(instance),
            None => Err(ConnectorError::fatal(format!(
                "`{call}` reached a connector of another type"
            ))),
        },
        Slot::NotOpened => Err(ConnectorError::fatal(format!(
            "`{call}` called before `open`: the connector is not started"
        ))),
        Slot::Closed => Err(ConnectorError::fatal(format!(
            "`{call}` called after `close`"
        ))),
    })
}

fn store<T: 'static>(instance: T) {
    // Opening again replaces (and drops) a previous instance.
    INSTANCE.with(|slot| *slot.borrow_mut() = Slot::Open(Box::new(instance)));
}

fn take<T: 'static>() -> Option<T> {
    INSTANCE.with(|slot| {
        let mut slot = slot.borrow_mut();
        match std::mem::replace(&mut *slot, Slot::Closed) {
            Slot::Open(any) => any.downcast::<T>().ok().map(|b| *b),
            Slot::NotOpened => {
                *slot = Slot::NotOpened;
                None
            }
            Slot::Closed => None,
        }
    })
}

fn fill_info(
    mut info: ConnectorInfo,
    name: &str,
    version: &str,
    description: &str,
) -> ConnectorInfo {
    if info.name.is_empty() {
        info.name = name.to_string();
    }
    if info.version.is_empty() {
        info.version = version.to_string();
    }
    if info.description.is_empty() {
        info.description = description.to_string();
    }
    info
}

macro_rules! conversions {
    ($wit:ident) => {
        impl From<ConnectorError> for $wit::ConnectorError {
            fn from(e: ConnectorError) -> Self {
                match e {
                    ConnectorError::Retryable(m) => Self::Retryable(m),
                    ConnectorError::InvalidData(m) => Self::InvalidData(m),
                    ConnectorError::Fatal(m) => Self::Fatal(m),
                    ConnectorError::Config(m) => Self::Config(m),
                }
            }
        }

        impl From<ProducerConfig> for $wit::ProducerConfig {
            fn from(p: ProducerConfig) -> Self {
                Self {
                    topic: p.topic,
                    partitions: p.partitions,
                    reliable: p.reliable,
                    schema_subject: p.schema_subject,
                }
            }
        }

        impl From<SourceRecord> for $wit::SourceRecord {
            fn from(r: SourceRecord) -> Self {
                Self {
                    topic: r.topic,
                    payload: r.payload,
                    attributes: r.attributes,
                    key: r.key,
                    offset: r.offset.map(|o| $wit::Offset {
                        stream: o.stream,
                        position: o.position,
                    }),
                }
            }
        }

        impl From<ConnectorInfo> for $wit::ConnectorInfo {
            fn from(i: ConnectorInfo) -> Self {
                Self {
                    name: i.name,
                    version: i.version,
                    description: i.description,
                    config_example: i.config_example,
                }
            }
        }
    };
}

conversions!(source_wit);
conversions!(sink_wit);
conversions!(ingress_wit);

/// The JSON Schema of a connector's configuration table, from its
/// `Config` type: what the host validates the table with, before `open`.
#[doc(hidden)]
pub fn config_schema<C: schemars::JsonSchema>() -> Option<String> {
    serde_json::to_string(&schemars::schema_for!(C)).ok()
}

// ---- source ----

#[doc(hidden)]
pub fn source_describe<T: Source>(
    name: &str,
    version: &str,
    description: &str,
) -> source_wit::ConnectorInfo {
    fill_info(T::describe(), name, version, description).into()
}

#[doc(hidden)]
pub fn source_open<T: Source>(
    config: String,
) -> Result<Vec<source_wit::ProducerConfig>, source_wit::ConnectorError> {
    let config = parse_config::<T::Config>(&config)?;
    let (instance, producers) = T::open(config)?;
    store(instance);
    Ok(producers.into_iter().map(Into::into).collect())
}

#[doc(hidden)]
pub fn source_poll<T: Source>(
    max: u32,
    timeout_ms: u32,
) -> Result<Vec<source_wit::SourceRecord>, source_wit::ConnectorError> {
    let records = with_instance::<T, _>("poll", |s| {
        s.poll(max as usize, Duration::from_millis(timeout_ms.into()))
    })?;
    Ok(records.into_iter().map(Into::into).collect())
}

#[doc(hidden)]
pub fn source_commit<T: Source>(
    offsets: Vec<source_wit::Offset>,
) -> Result<(), source_wit::ConnectorError> {
    let offsets = offsets
        .into_iter()
        .map(|o| Offset {
            stream: o.stream,
            position: o.position,
        })
        .collect();
    Ok(with_instance::<T, _>("commit", |s| s.commit(offsets))?)
}

#[doc(hidden)]
pub fn source_health<T: Source>() -> Result<(), String> {
    match with_instance::<T, _>("health", |s| Ok(s.health())) {
        Ok(r) => r,
        Err(e) => Err(e.message().to_string()),
    }
}

#[doc(hidden)]
pub fn source_close<T: Source>() {
    if let Some(mut instance) = take::<T>() {
        instance.close();
    }
}

// ---- sink ----

#[doc(hidden)]
pub fn sink_describe<T: Sink>(
    name: &str,
    version: &str,
    description: &str,
) -> sink_wit::ConnectorInfo {
    fill_info(T::describe(), name, version, description).into()
}

#[doc(hidden)]
pub fn sink_open<T: Sink>(
    config: String,
) -> Result<Vec<sink_wit::ConsumerConfig>, sink_wit::ConnectorError> {
    let config = parse_config::<T::Config>(&config)?;
    let (instance, consumers) = T::open(config)?;
    store(instance);
    Ok(consumers
        .into_iter()
        .map(|c: ConsumerConfig| sink_wit::ConsumerConfig {
            topic: c.topic,
            subscription: c.subscription,
            subscription_type: match c.subscription_type {
                SubscriptionType::Exclusive => sink_wit::SubscriptionType::Exclusive,
                SubscriptionType::Shared => sink_wit::SubscriptionType::Shared,
                SubscriptionType::Failover => sink_wit::SubscriptionType::Failover,
                SubscriptionType::KeyShared => sink_wit::SubscriptionType::KeyShared,
            },
            expected_schema_subject: c.expected_schema_subject,
            decode_avro: c.decode_avro,
        })
        .collect())
}

#[doc(hidden)]
pub fn sink_process_batch<T: Sink>(
    records: Vec<sink_wit::SinkRecord>,
) -> Result<Vec<sink_wit::RecordFailure>, sink_wit::ConnectorError> {
    if records.is_empty() {
        with_instance::<T, _>("process-batch", |s| s.tick())?;
        return Ok(Vec::new());
    }
    let records = records
        .into_iter()
        .map(|r| SinkRecord {
            topic: r.topic,
            payload: r.payload,
            attributes: r.attributes,
            key: r.key,
            publish_time: r.publish_time,
            producer: r.producer,
            offset: r.offset,
            redelivery_count: r.redelivery_count,
            schema: r.schema.map(|s| SchemaRef {
                subject: s.subject,
                version: s.version,
            }),
        })
        .collect();
    let outcome = with_instance::<T, _>("process-batch", |s| s.process_batch(records))?;
    Ok(outcome
        .into_failures()
        .into_iter()
        .map(|f| sink_wit::RecordFailure {
            index: f.index,
            error: f.error.into(),
        })
        .collect())
}

#[doc(hidden)]
pub fn sink_health<T: Sink>() -> Result<(), String> {
    match with_instance::<T, _>("health", |s| Ok(s.health())) {
        Ok(r) => r,
        Err(e) => Err(e.message().to_string()),
    }
}

#[doc(hidden)]
pub fn sink_close<T: Sink>() {
    if let Some(mut instance) = take::<T>() {
        instance.close();
    }
}

// ---- ingress ----

#[doc(hidden)]
pub fn ingress_describe<T: Ingress>(
    name: &str,
    version: &str,
    description: &str,
) -> ingress_wit::ConnectorInfo {
    fill_info(T::describe(), name, version, description).into()
}

#[doc(hidden)]
pub fn ingress_open<T: Ingress>(
    config: String,
) -> Result<ingress_wit::IngressSetup, ingress_wit::ConnectorError> {
    let config = parse_config::<T::Config>(&config)?;
    let (instance, setup) = T::open(config)?;
    store(instance);
    Ok(ingress_wit::IngressSetup {
        producers: setup.producers.into_iter().map(Into::into).collect(),
        routes: setup
            .routes
            .into_iter()
            .map(|r| ingress_wit::IngressRoute {
                path: r.path,
                requests_per_second: r.requests_per_second,
                burst: r.burst,
            })
            .collect(),
    })
}

#[doc(hidden)]
pub fn ingress_handle<T: Ingress>(
    request: ingress_wit::HttpRequest,
) -> Result<Vec<ingress_wit::SourceRecord>, ingress_wit::ConnectorError> {
    let request = HttpRequest {
        method: request.method,
        path: request.path,
        query: request.query,
        headers: request.headers,
        body: request.body,
        remote_address: request.remote_address,
    };
    let records = with_instance::<T, _>("handle", |s| s.handle(request))?;
    Ok(records.into_iter().map(Into::into).collect())
}

#[doc(hidden)]
pub fn ingress_health<T: Ingress>() -> Result<(), String> {
    match with_instance::<T, _>("health", |s| Ok(s.health())) {
        Ok(r) => r,
        Err(e) => Err(e.message().to_string()),
    }
}

#[doc(hidden)]
pub fn ingress_close<T: Ingress>() {
    if let Some(mut instance) = take::<T>() {
        instance.close();
    }
}

/// Exports a [`Source`] implementation as the component's
/// `danube:connect/source-connector` interface.
///
/// ```ignore
/// danube_connect_sdk::export_source!(MySource);
/// ```
///
/// Use it once, in the connector crate (a `cdylib`). The instance created by
/// `open` lives until `close`; a call before `open` fails with a fatal error.
#[macro_export]
macro_rules! export_source {
    ($ty:ty) => {
        const _: () = {
            use $crate::__private::source_types as __wit;

            struct __DanubeConnectSource;

            impl $crate::__private::SourceGuest for __DanubeConnectSource {
                fn describe() -> __wit::ConnectorInfo {
                    $crate::__private::source_describe::<$ty>(
                        ::core::env!("CARGO_PKG_NAME"),
                        ::core::env!("CARGO_PKG_VERSION"),
                        ::core::env!("CARGO_PKG_DESCRIPTION"),
                    )
                }
                fn open(
                    config: ::std::string::String,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<__wit::ProducerConfig>,
                    __wit::ConnectorError,
                > {
                    $crate::__private::source_open::<$ty>(config)
                }
                fn poll(
                    max: u32,
                    timeout_ms: u32,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<__wit::SourceRecord>,
                    __wit::ConnectorError,
                > {
                    $crate::__private::source_poll::<$ty>(max, timeout_ms)
                }
                fn commit(
                    offsets: ::std::vec::Vec<__wit::Offset>,
                ) -> ::core::result::Result<(), __wit::ConnectorError> {
                    $crate::__private::source_commit::<$ty>(offsets)
                }
                fn health() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::source_health::<$ty>()
                }
                fn close() {
                    $crate::__private::source_close::<$ty>()
                }
            }

            impl $crate::__private::Configuration for __DanubeConnectSource {
                fn schema() -> ::core::option::Option<::std::string::String> {
                    $crate::__private::config_schema::<<$ty as $crate::Source>::Config>()
                }
            }

            $crate::__export_described_impl!(
                __DanubeConnectSource with_types_in $crate::__private::described_bindings
            );

            $crate::__export_source_impl!(
                __DanubeConnectSource with_types_in $crate::__private::source_bindings
            );
        };
    };
}

/// Exports a [`Sink`] implementation as the component's
/// `danube:connect/sink-connector` interface.
///
/// ```ignore
/// danube_connect_sdk::export_sink!(MySink);
/// ```
#[macro_export]
macro_rules! export_sink {
    ($ty:ty) => {
        const _: () = {
            use $crate::__private::sink_types as __wit;

            struct __DanubeConnectSink;

            impl $crate::__private::SinkGuest for __DanubeConnectSink {
                fn describe() -> __wit::ConnectorInfo {
                    $crate::__private::sink_describe::<$ty>(
                        ::core::env!("CARGO_PKG_NAME"),
                        ::core::env!("CARGO_PKG_VERSION"),
                        ::core::env!("CARGO_PKG_DESCRIPTION"),
                    )
                }
                fn open(
                    config: ::std::string::String,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<__wit::ConsumerConfig>,
                    __wit::ConnectorError,
                > {
                    $crate::__private::sink_open::<$ty>(config)
                }
                fn process_batch(
                    records: ::std::vec::Vec<__wit::SinkRecord>,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<__wit::RecordFailure>,
                    __wit::ConnectorError,
                > {
                    $crate::__private::sink_process_batch::<$ty>(records)
                }
                fn health() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::sink_health::<$ty>()
                }
                fn close() {
                    $crate::__private::sink_close::<$ty>()
                }
            }

            impl $crate::__private::Configuration for __DanubeConnectSink {
                fn schema() -> ::core::option::Option<::std::string::String> {
                    $crate::__private::config_schema::<<$ty as $crate::Sink>::Config>()
                }
            }

            $crate::__export_described_impl!(
                __DanubeConnectSink with_types_in $crate::__private::described_bindings
            );

            $crate::__export_sink_impl!(
                __DanubeConnectSink with_types_in $crate::__private::sink_bindings
            );
        };
    };
}

/// Exports an [`Ingress`] implementation as the component's
/// `danube:connect/ingress-connector` interface.
///
/// ```ignore
/// danube_connect_sdk::export_ingress!(MyWebhook);
/// ```
#[macro_export]
macro_rules! export_ingress {
    ($ty:ty) => {
        const _: () = {
            use $crate::__private::ingress_types as __wit;

            struct __DanubeConnectIngress;

            impl $crate::__private::IngressGuest for __DanubeConnectIngress {
                fn describe() -> __wit::ConnectorInfo {
                    $crate::__private::ingress_describe::<$ty>(
                        ::core::env!("CARGO_PKG_NAME"),
                        ::core::env!("CARGO_PKG_VERSION"),
                        ::core::env!("CARGO_PKG_DESCRIPTION"),
                    )
                }
                fn open(
                    config: ::std::string::String,
                ) -> ::core::result::Result<__wit::IngressSetup, __wit::ConnectorError> {
                    $crate::__private::ingress_open::<$ty>(config)
                }
                fn handle(
                    request: __wit::HttpRequest,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<__wit::SourceRecord>,
                    __wit::ConnectorError,
                > {
                    $crate::__private::ingress_handle::<$ty>(request)
                }
                fn health() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::ingress_health::<$ty>()
                }
                fn close() {
                    $crate::__private::ingress_close::<$ty>()
                }
            }

            impl $crate::__private::Configuration for __DanubeConnectIngress {
                fn schema() -> ::core::option::Option<::std::string::String> {
                    $crate::__private::config_schema::<<$ty as $crate::Ingress>::Config>()
                }
            }

            $crate::__export_described_impl!(
                __DanubeConnectIngress with_types_in $crate::__private::described_bindings
            );

            $crate::__export_ingress_impl!(
                __DanubeConnectIngress with_types_in $crate::__private::ingress_bindings
            );
        };
    };
}
