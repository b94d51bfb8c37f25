//! A sink batch as the worker hands it to the guest: each record a view into
//! the frame it arrived in, lowered straight into the guest's memory.
//!
//! Decoded into owned records and converted to the generated bindings'
//! types, a 1 KiB record cost five allocations, their copies and their
//! frees before the lowering copied it all once more (a fifth of the
//! boundary's CPU, measured with perf). A view borrows its strings and
//! payload from the frame, so the lowering is the one copy. Its serde shape
//! is [`contract::SinkRecord`]'s, which the supervisor encodes (a test
//! holds them together); its component shape is the WIT `sink-record`,
//! which wasmtime checks when [`ProcessBatch`] is found.

use anyhow::Context;
use serde::Deserialize;
use wasmtime::component::{ComponentType, Func, Instance, Lower};
use wasmtime::{AsContextMut, Store};

use super::state::GuestState;
use crate::bindings::types as wit;
#[cfg(doc)]
use crate::contract;

/// One record of a sink batch, borrowed from the frame.
#[derive(Debug, Deserialize, ComponentType, Lower)]
#[component(record)]
pub struct SinkRecordView<'a> {
    topic: &'a str,
    payload: &'a [u8],
    #[serde(borrow)]
    attributes: Vec<(&'a str, &'a str)>,
    #[serde(borrow)]
    key: Option<&'a str>,
    #[component(name = "publish-time")]
    publish_time: u64,
    producer: &'a str,
    offset: u64,
    #[component(name = "redelivery-count")]
    redelivery_count: u32,
    #[serde(borrow)]
    schema: Option<SchemaRefView<'a>>,
}

#[derive(Debug, Deserialize, ComponentType, Lower)]
#[component(record)]
pub struct SchemaRefView<'a> {
    subject: &'a str,
    version: u32,
}

type Params<'r, 'a> = (&'r [SinkRecordView<'a>],);
type Return = (Result<Vec<wit::RecordFailure>, wit::ConnectorError>,);

/// A sink's `process-batch`, called with [`SinkRecordView`]s.
pub struct ProcessBatch(Func);

impl ProcessBatch {
    /// Finds the export in `instance` and checks its type against the views.
    pub fn find(
        store: &mut Store<GuestState>,
        instance: &Instance,
        interface: &str,
    ) -> anyhow::Result<ProcessBatch> {
        let interface_index = instance
            .get_export_index(&mut *store, None, interface)
            .with_context(|| format!("the module does not export {interface}"))?;
        let func = instance
            .get_export_index(&mut *store, Some(&interface_index), "process-batch")
            .and_then(|index| instance.get_func(&mut *store, index))
            .with_context(|| format!("{interface} has no process-batch function"))?;
        func.typed::<Params<'_, '_>, Return>(&*store).map_err(|e| {
            anyhow::anyhow!("{interface}'s process-batch does not match the WIT: {e}")
        })?;
        Ok(ProcessBatch(func))
    }

    /// Calls it. `Err` is a trap.
    pub fn call(
        &self,
        mut store: impl AsContextMut<Data = GuestState>,
        records: &[SinkRecordView<'_>],
    ) -> wasmtime::Result<Result<Vec<wit::RecordFailure>, wit::ConnectorError>> {
        // The type check again (the views' lifetime is the call's): a walk
        // over a dozen fields, next to a batch of records.
        let typed = self.0.typed::<Params<'_, '_>, Return>(&store)?;
        let (result,) = typed.call(&mut store, (records,))?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{SchemaRef, SinkRecord};

    /// The supervisor encodes `SinkRecord`s; the worker reads views of them.
    #[test]
    fn a_view_reads_what_the_supervisor_encodes() {
        let records = vec![
            SinkRecord {
                topic: "/default/a".into(),
                payload: vec![0, 1, 2, 255],
                attributes: vec![("k".into(), "v".into()), ("é".into(), String::new())],
                key: Some("key".into()),
                publish_time: 1_700_000_000_000,
                producer: "p".into(),
                offset: u64::MAX,
                redelivery_count: 3,
                schema: Some(SchemaRef {
                    subject: "s".into(),
                    version: 7,
                }),
            },
            SinkRecord {
                topic: String::new(),
                payload: Vec::new(),
                attributes: Vec::new(),
                key: None,
                publish_time: 0,
                producer: String::new(),
                offset: 0,
                redelivery_count: 0,
                schema: None,
            },
        ];
        let bytes = postcard::to_allocvec(&records).unwrap();
        let views: Vec<SinkRecordView<'_>> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(views.len(), records.len());
        for (view, record) in views.iter().zip(&records) {
            assert_eq!(view.topic, record.topic);
            assert_eq!(view.payload, record.payload.as_slice());
            let attributes: Vec<(String, String)> = view
                .attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(attributes, record.attributes);
            assert_eq!(view.key, record.key.as_deref());
            assert_eq!(view.publish_time, record.publish_time);
            assert_eq!(view.producer, record.producer);
            assert_eq!(view.offset, record.offset);
            assert_eq!(view.redelivery_count, record.redelivery_count);
            assert_eq!(
                view.schema.as_ref().map(|s| (s.subject, s.version)),
                record
                    .schema
                    .as_ref()
                    .map(|s| (s.subject.as_str(), s.version))
            );
        }
    }
}
