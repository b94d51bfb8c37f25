//! The imports in process: each `Host` driven directly, with the
//! supervisor's side ([`ImportHost`]) on the other end of a real socket
//! pair, as a worker and its supervisor are connected.

use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use super::metrics::{GuestMetric, MetricsView};
use super::state::{GuestStore, StateStore, StoreView};
use super::*;
use crate::bindings::{metrics::Host as _, state::Host as _};
use crate::contract::{Call, SinkRecord};
use crate::ipc::read_frame;

/// The supervisor's end: acts on every request as `supervisor/worker.rs`
/// does, after sending `first` (a call that crosses the answer), and hands
/// back its side and the requests it saw once the worker hangs up.
fn supervisor(
    mut socket: UnixStream,
    mut host: ImportHost,
    first: Option<ToWorker>,
) -> JoinHandle<(ImportHost, Vec<String>)> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Ok(Some(FromWorker::Import(request))) = read_frame::<FromWorker>(&mut socket) {
            seen.push(format!("{request:?}"));
            let reply = host.handle(request);
            if let Some(call) = &first {
                write_frame(&mut socket, call).unwrap();
            }
            if let Some(reply) = reply {
                write_frame(&mut socket, &ToWorker::<SinkRecord>::ImportReply(reply)).unwrap();
            }
        }
        (host, seen)
    })
}

fn host(state: StateStore) -> ImportHost {
    ImportHost {
        state,
        metrics: None,
    }
}

#[test]
fn a_put_returns_once_the_supervisor_has_saved_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = supervisor(theirs, host(StateStore::open(&path).unwrap()), None);
    let mut link = SupervisorLink::new(ours);
    let mut store = GuestStore::new(Default::default());
    let mut view = StoreView {
        store: &mut store,
        link: &mut link,
    };
    view.put("position".into(), b"42".to_vec()).unwrap();
    // On disk as put returns, before the supervisor's side is even asked.
    let reopened = StateStore::open(&path).unwrap();
    assert_eq!(reopened.entries()["position"], b"42");
    assert_eq!(view.get("position".into()), Some(b"42".to_vec()));
    view.delete("position".into());
    assert_eq!(view.get("position".into()), None);
    drop(link);
    let (host, _) = peer.join().unwrap();
    assert!(host.state.entries().is_empty());
    assert!(StateStore::open(&path).unwrap().entries().is_empty());
}

#[test]
fn a_put_the_supervisor_cannot_save_fails_and_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(&dir.path().join("sub/state.json")).unwrap();
    // The store's directory cannot be made: a file has its name.
    std::fs::write(dir.path().join("sub"), b"").unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = supervisor(theirs, host(store), None);
    let mut link = SupervisorLink::new(ours);
    let mut store = GuestStore::new(Default::default());
    let mut view = StoreView {
        store: &mut store,
        link: &mut link,
    };
    let error = view.put("k".into(), b"v".to_vec()).unwrap_err();
    assert!(error.contains("could not persist"), "{error}");
    assert_eq!(view.get("k".into()), None);
    drop(link);
    peer.join().unwrap();
}

#[test]
fn a_call_that_crosses_an_answer_is_kept_for_the_call_loop() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let record = SinkRecord {
        topic: "/default/t".into(),
        payload: b"payload".to_vec(),
        attributes: Vec::new(),
        key: None,
        publish_time: 0,
        producer: "p".into(),
        offset: 3,
        redelivery_count: 0,
        schema: None,
    };
    let call: ToWorker = ToWorker::Call {
        id: 7,
        trace_id: 1,
        call: Call::ProcessBatch {
            records: vec![record],
        },
    };
    let peer = supervisor(theirs, host(StateStore::in_memory()), Some(call));
    let mut link = SupervisorLink::new(ours);
    let mut store = GuestStore::new(Default::default());
    StoreView {
        store: &mut store,
        link: &mut link,
    }
    .put("k".into(), b"v".to_vec())
    .unwrap();
    // Kept as its frame, which the call loop reads the batch's views from.
    let frame = link.next_queued().expect("the crossing call is queued");
    assert!(matches!(
        decode::<ToWorker<SinkRecordView<'_>>>(&frame).unwrap(),
        ToWorker::Call {
            id: 7,
            call: Call::ProcessBatch { records },
            ..
        } if records.len() == 1
    ));
    assert!(link.next_queued().is_none());
    drop(link);
    peer.join().unwrap();
}

#[test]
fn a_put_over_the_limits_is_refused_in_the_worker() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let peer = supervisor(theirs, host(StateStore::in_memory()), None);
    let mut link = SupervisorLink::new(ours);
    let mut store = GuestStore::new(Default::default());
    let mut view = StoreView {
        store: &mut store,
        link: &mut link,
    };
    let error = view.put("k".into(), vec![0; 64 * 1024 + 1]).unwrap_err();
    assert!(error.contains("exceeds the 65536-byte limit"), "{error}");
    for i in 0..16 {
        view.put(format!("k{i}"), vec![0; 64 * 1024 - 8]).unwrap();
    }
    let error = view.put("one more".into(), vec![0; 1024]).unwrap_err();
    assert!(error.contains("would exceed 1048576 bytes"), "{error}");
    drop(link);
    let (host, seen) = peer.join().unwrap();
    // The refused puts never reached the supervisor.
    assert_eq!(seen.len(), 16);
    assert_eq!(host.state.entries().len(), 16);
}

#[test]
fn metric_names_and_labels_are_bounded_before_they_leave_the_worker() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut link = SupervisorLink::new(ours);
    let long = "x".repeat(10_000);
    MetricsView { link: &mut link }.counter_add(
        format!("rows\nwritten{long}"),
        3,
        vec![(long.clone(), long.clone())],
    );
    let Ok(Some(FromWorker::Import(ImportRequest::Metric(GuestMetric::Counter {
        name,
        value,
        labels,
    })))) = read_frame::<FromWorker>(&mut theirs)
    else {
        panic!("no counter update arrived");
    };
    assert_eq!(value, 3);
    assert!(!name.contains('\n'), "{name:?}");
    // At most the bound, and the note of what was cut.
    assert!(name.len() <= crate::guest_text::NAME + 32, "{}", name.len());
    assert!(labels[0].0.len() + labels[0].1.len() < long.len());
}
