//! The frame codec and the messages: round trips, and never a panic on
//! whatever bytes arrive.

use std::io;
use std::path::PathBuf;

use serde::{Serialize, de::DeserializeOwned};

use super::*;
use crate::capability::metrics::GuestMetric;
use crate::capability::network::NetRule;
use crate::capability::{ImportReply, ImportRequest, SandboxLimits};
use crate::contract::*;
use crate::worker::SinkRecordView;

#[test]
fn frames_round_trip_and_eof_is_clean() {
    let mut buf = Vec::new();
    let call: ToWorker = ToWorker::Call {
        id: 7,
        trace_id: 9,
        call: Call::Poll {
            max: 10,
            timeout_ms: 5,
        },
    };
    write_frame(&mut buf, &call).unwrap();
    let mut input = buf.as_slice();
    let back: ToWorker = read_frame(&mut input).unwrap().unwrap();
    assert!(matches!(
        back,
        ToWorker::Call {
            id: 7,
            trace_id: 9,
            call: Call::Poll { max: 10, .. }
        }
    ));
    assert!(read_frame::<ToWorker>(&mut input).unwrap().is_none());
}

#[test]
fn oversized_length_is_refused_before_allocating() {
    let bytes = u32::MAX.to_le_bytes();
    let err = read_frame::<ToWorker>(&mut bytes.as_slice()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn a_length_past_the_end_of_the_stream_is_an_error() {
    let mut bytes = (MAX_FRAME_BYTES as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"abc");
    let err = read_frame::<ToWorker>(&mut bytes.as_slice()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains("3 of 268435456 bytes"), "{err}");
}

mod properties {
    //! Property tests of the frame codec: whatever bytes arrive, reading
    //! returns a frame, a clean end or an error, never a panic; and every
    //! message written reads back the same.

    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::LazyJust;

    /// Writes `messages` as frames and reads them back: each the same (as
    /// its debug form shows it), then a clean end.
    fn round_trip<T: Serialize + DeserializeOwned + std::fmt::Debug>(
        messages: &[T],
    ) -> Result<(), TestCaseError> {
        let mut bytes = Vec::new();
        for m in messages {
            write_frame(&mut bytes, m).unwrap();
        }
        let mut input = bytes.as_slice();
        for m in messages {
            let back: T = read_frame(&mut input).unwrap().unwrap();
            prop_assert_eq!(format!("{back:?}"), format!("{m:?}"));
        }
        prop_assert!(read_frame::<T>(&mut input).unwrap().is_none());
        Ok(())
    }

    /// Reads frames until the end or an error, as the worker and the
    /// supervisor do; returns how many were read.
    fn drain<T: DeserializeOwned>(bytes: &[u8]) -> usize {
        let mut input = bytes;
        let mut frames = 0;
        while let Ok(Some(_)) = read_frame::<T>(&mut input) {
            frames += 1;
        }
        frames
    }

    /// Reads frames as the worker does (a sink batch as views borrowed from
    /// its frame) until the end or an error; returns each message's debug
    /// form, which reads like the owned message's.
    fn drain_as_worker(bytes: &[u8]) -> Vec<String> {
        let mut input = bytes;
        let mut body = Vec::new();
        let mut read = Vec::new();
        while let Ok(true) = read_body(&mut input, &mut body) {
            match decode::<ToWorker<SinkRecordView<'_>>>(&body) {
                Ok(message) => read.push(format!("{message:?}").replace("View", "")),
                Err(_) => break,
            }
        }
        read
    }

    /// `body` behind a length prefix that matches it, so that decoding
    /// gets past the length check and into the message itself.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,40}", "\\PC{0,8}"]
    }

    fn offset() -> impl Strategy<Value = Offset> {
        (text(), any::<u64>()).prop_map(|(stream, position)| Offset { stream, position })
    }

    fn attributes() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec((text(), text()), 0..4)
    }

    fn error() -> impl Strategy<Value = ConnectorError> {
        prop_oneof![
            text().prop_map(ConnectorError::Retryable),
            text().prop_map(ConnectorError::InvalidData),
            text().prop_map(ConnectorError::Fatal),
            text().prop_map(ConnectorError::Config),
        ]
    }

    fn sink_record() -> impl Strategy<Value = SinkRecord> {
        (
            text(),
            prop::collection::vec(any::<u8>(), 0..64),
            attributes(),
            prop::option::of(text()),
            any::<u64>(),
            text(),
            any::<u64>(),
            any::<u32>(),
            prop::option::of((text(), any::<u32>())),
        )
            .prop_map(
                |(
                    topic,
                    payload,
                    attributes,
                    key,
                    publish_time,
                    producer,
                    offset,
                    redelivery_count,
                    schema,
                )| {
                    SinkRecord {
                        topic,
                        payload,
                        attributes,
                        key,
                        publish_time,
                        producer,
                        offset,
                        redelivery_count,
                        schema: schema.map(|(subject, version)| SchemaRef { subject, version }),
                    }
                },
            )
    }

    fn source_record() -> impl Strategy<Value = SourceRecord> {
        (
            text(),
            prop::collection::vec(any::<u8>(), 0..64),
            attributes(),
            prop::option::of(text()),
            prop::option::of(offset()),
        )
            .prop_map(|(topic, payload, attributes, key, offset)| SourceRecord {
                topic,
                payload,
                attributes,
                key,
                offset,
            })
    }

    fn call() -> impl Strategy<Value = Call> {
        prop_oneof![
            text().prop_map(|config_json| Call::Open { config_json }),
            (any::<u32>(), any::<u32>())
                .prop_map(|(max, timeout_ms)| Call::Poll { max, timeout_ms }),
            prop::collection::vec(offset(), 0..4).prop_map(|offsets| Call::Commit { offsets }),
            prop::collection::vec(sink_record(), 0..4)
                .prop_map(|records| Call::ProcessBatch { records }),
            LazyJust::new(|| Call::Health),
            LazyJust::new(|| Call::Close),
        ]
    }

    fn to_worker() -> impl Strategy<Value = ToWorker> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), call()).prop_map(|(id, trace_id, call)| ToWorker::Call {
                id,
                trace_id,
                call
            }),
            prop::option::of(text()).prop_map(|e| {
                ToWorker::ImportReply(ImportReply::StateSaved(e.map_or(Ok(()), Err)))
            }),
            (
                any::<u32>(),
                text(),
                prop::collection::vec(text(), 0..3),
                any::<u64>(),
                any::<u64>(),
                prop::collection::btree_map(
                    text(),
                    prop::collection::vec(any::<u8>(), 0..16),
                    0..4
                ),
                any::<bool>(),
                prop::collection::vec((any::<[u8; 4]>(), 0u8..=32, any::<u16>()), 0..3),
                prop::option::of(any::<u64>()),
                any::<u64>(),
                prop::option::of(prop_oneof![
                    text().prop_map(|p| SelfTest::Read(PathBuf::from(p))),
                    text().prop_map(SelfTest::Syscall),
                ]),
            )
                .prop_map(
                    |(
                        protocol_version,
                        connector,
                        dirs,
                        memory_bytes,
                        call_timeout_ms,
                        state,
                        log_json,
                        allow,
                        fuel,
                        max_file_bytes,
                        self_test,
                    )| {
                        ToWorker::Init(Box::new(WorkerInit {
                            protocol_version,
                            module: PathBuf::from(&connector),
                            cache_dir: dirs.first().map(PathBuf::from),
                            limits: SandboxLimits {
                                memory_bytes,
                                call_timeout_ms,
                                dirs: dirs.iter().map(PathBuf::from).collect(),
                                names: dirs.clone(),
                                allow: allow
                                    .into_iter()
                                    .map(|(ip, prefix_len, port)| NetRule {
                                        network: ipnet::Ipv4Net::new(ip.into(), prefix_len)
                                            .unwrap()
                                            .into(),
                                        port,
                                    })
                                    .collect(),
                                fuel,
                                max_file_bytes,
                            },
                            connector,
                            state,
                            log_filter: "info".into(),
                            log_json,
                            self_test,
                        }))
                    },
                ),
        ]
    }

    fn outcome() -> impl Strategy<Value = CallOutcome> {
        prop_oneof![
            prop::collection::vec(source_record(), 0..4).prop_map(CallOutcome::Polled),
            prop::collection::vec((any::<u32>(), error()), 0..4).prop_map(|f| {
                CallOutcome::Processed(
                    f.into_iter()
                        .map(|(index, error)| RecordFailure { index, error })
                        .collect(),
                )
            }),
            LazyJust::new(|| CallOutcome::Done),
            error().prop_map(CallOutcome::Error),
            text().prop_map(CallOutcome::Trapped),
            prop::collection::vec((text(), text(), any::<bool>()), 0..3).prop_map(|c| {
                CallOutcome::Opened(Opened::Source(
                    c.into_iter()
                        .map(|(topic, subject, reliable)| ProducerConfig {
                            topic,
                            partitions: 3,
                            reliable,
                            schema_subject: Some(subject),
                        })
                        .collect(),
                ))
            }),
        ]
    }

    fn from_worker() -> impl Strategy<Value = FromWorker> {
        prop_oneof![
            (any::<u64>(), outcome(), any::<u64>()).prop_map(|(id, outcome, memory_bytes)| {
                FromWorker::Reply {
                    id,
                    outcome,
                    memory_bytes,
                }
            }),
            text().prop_map(FromWorker::LoadFailed),
            any::<[u8; 4]>().prop_map(|number_le| FromWorker::SyscallDenied { number_le }),
            (
                text(),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..32))
            )
                .prop_map(|(key, value)| FromWorker::Import(ImportRequest::StatePut {
                    key,
                    value
                })),
            (text(), any::<u64>(), attributes()).prop_map(|(name, value, labels)| {
                FromWorker::Import(ImportRequest::Metric(GuestMetric::Counter {
                    name,
                    value,
                    labels,
                }))
            }),
            (text(), any::<f64>(), attributes()).prop_map(|(name, value, labels)| {
                FromWorker::Import(ImportRequest::Metric(GuestMetric::Gauge {
                    name,
                    value,
                    labels,
                }))
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            drain::<ToWorker>(&bytes);
            drain_as_worker(&bytes);
            drain::<FromWorker>(&bytes);
        }

        #[test]
        fn decoding_an_arbitrary_body_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let bytes = framed(&body);
            drain::<ToWorker>(&bytes);
            drain_as_worker(&bytes);
            drain::<FromWorker>(&bytes);
        }

        #[test]
        fn a_corrupted_frame_never_panics(
            message in from_worker(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = Vec::new();
            write_frame(&mut bytes, &message).unwrap();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            drain::<FromWorker>(&bytes);
        }

        #[test]
        fn a_frame_cut_short_is_an_error_or_the_end(message in to_worker(), cut in any::<prop::sample::Index>()) {
            let mut bytes = Vec::new();
            write_frame(&mut bytes, &message).unwrap();
            let cut = cut.index(bytes.len());
            let result = read_frame::<ToWorker>(&mut &bytes[..cut]);
            prop_assert!(!matches!(result, Ok(Some(_))), "a partial frame decoded");
        }

        #[test]
        fn supervisor_frames_round_trip(messages in prop::collection::vec(to_worker(), 1..4)) {
            round_trip(&messages)?;
        }

        #[test]
        fn the_worker_reads_what_the_supervisor_writes(messages in prop::collection::vec(to_worker(), 1..4)) {
            let mut bytes = Vec::new();
            for m in &messages {
                write_frame(&mut bytes, m).unwrap();
            }
            let written: Vec<String> = messages.iter().map(|m| format!("{m:?}")).collect();
            prop_assert_eq!(drain_as_worker(&bytes), written);
        }

        #[test]
        fn worker_frames_round_trip(messages in prop::collection::vec(from_worker(), 1..4)) {
            round_trip(&messages)?;
        }
    }
}
