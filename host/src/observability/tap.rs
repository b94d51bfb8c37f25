//! Record taps: a view of the records a connector is producing or consuming
//! right now, for a person watching (`danube-host dev` prints them).
//!
//! A tap is a broadcast channel per connector. The pipelines hand it a
//! record only while somebody listens (one atomic load per record
//! otherwise), and a listener that falls behind loses the oldest records
//! rather than holding the pipeline back: it is a sample, never a queue.
//! What a guest produced is untrusted, so a tapped payload is cut to
//! [`PAYLOAD_SHOWN`] bytes before it is copied.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::broadcast;

use crate::guest_text::printable;

/// Records a listener may fall behind by before it loses the oldest.
const BACKLOG: usize = 256;
/// Bytes of a payload a tap keeps.
pub const PAYLOAD_SHOWN: usize = 200;
/// Attributes a tap keeps, and bytes of each name and value.
const ATTRIBUTES_SHOWN: usize = 16;
const ATTRIBUTE_BYTES_SHOWN: usize = 100;

/// Which way a record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A source's record, on its way to Danube.
    Produced,
    /// A message a sink consumed, on its way to the guest.
    Consumed,
}

/// One record as a tap shows it.
#[derive(Debug, Clone)]
pub struct TappedRecord {
    pub direction: Direction,
    pub topic: String,
    pub key: Option<String>,
    /// The first [`ATTRIBUTES_SHOWN`] attributes, each cut to
    /// [`ATTRIBUTE_BYTES_SHOWN`] bytes.
    pub attributes: Vec<(String, String)>,
    /// The first [`PAYLOAD_SHOWN`] bytes of the payload.
    pub payload: Vec<u8>,
    /// The payload's whole length.
    pub payload_len: usize,
}

impl TappedRecord {
    pub fn new<'a>(
        direction: Direction,
        topic: &str,
        key: Option<&str>,
        attributes: impl IntoIterator<Item = (&'a String, &'a String)>,
        payload: &[u8],
    ) -> Self {
        TappedRecord {
            direction,
            topic: topic.to_string(),
            key: key.map(str::to_string),
            attributes: attributes
                .into_iter()
                .take(ATTRIBUTES_SHOWN)
                .map(|(k, v)| (cut(k), cut(v)))
                .collect(),
            payload: payload[..payload.len().min(PAYLOAD_SHOWN)].to_vec(),
            payload_len: payload.len(),
        }
    }

    /// One line: direction, topic, key and the payload as text (control
    /// characters escaped, cut where the tap cut it).
    pub fn line(&self) -> String {
        let arrow = match self.direction {
            Direction::Produced => "->",
            Direction::Consumed => "<-",
        };
        let key = self
            .key
            .as_deref()
            .map_or(String::new(), |k| format!(" key={}", printable(k)));
        let attributes: String = self
            .attributes
            .iter()
            .map(|(k, v)| format!(" {}={}", printable(k), printable(v)))
            .collect();
        let text = String::from_utf8_lossy(&self.payload);
        let more = match self.payload_len > self.payload.len() {
            true => format!("… ({} bytes)", self.payload_len),
            false => String::new(),
        };
        format!(
            "{arrow} {}{key}{attributes} {}{more}",
            printable(&self.topic),
            printable(&text)
        )
    }
}

/// `text` cut to [`ATTRIBUTE_BYTES_SHOWN`] bytes, on a character boundary.
fn cut(text: &str) -> String {
    text[..text.floor_char_boundary(ATTRIBUTE_BYTES_SHOWN)].to_string()
}

/// One connector's tap.
#[derive(Clone)]
pub struct Tap {
    sender: broadcast::Sender<TappedRecord>,
    /// Listeners alive: read on every record, so an atomic (the channel's
    /// own count takes a lock).
    listeners: Arc<AtomicUsize>,
}

impl Default for Tap {
    fn default() -> Self {
        Tap {
            sender: broadcast::channel(BACKLOG).0,
            listeners: Arc::default(),
        }
    }
}

impl Tap {
    /// Whether anybody listens: records are made only then.
    pub fn listened(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    pub fn send(&self, record: TappedRecord) {
        let _ = self.sender.send(record);
    }

    pub fn listen(&self) -> Listener {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Listener {
            receiver: self.sender.subscribe(),
            listeners: Arc::clone(&self.listeners),
        }
    }
}

/// The receiving end of a tap; the tap stops making records once every
/// listener is dropped.
pub struct Listener {
    receiver: broadcast::Receiver<TappedRecord>,
    listeners: Arc<AtomicUsize>,
}

impl Listener {
    /// The next record; `Lagged(n)` when `n` were lost to a full backlog.
    pub async fn recv(&mut self) -> Result<TappedRecord, broadcast::error::RecvError> {
        self.receiver.recv().await
    }

    #[cfg(test)]
    fn try_recv(&mut self) -> Result<TappedRecord, broadcast::error::TryRecvError> {
        self.receiver.try_recv()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_sends_only_to_listeners_and_cuts_payloads() {
        let tap = Tap::default();
        assert!(!tap.listened());
        let mut listener = tap.listen();
        assert!(tap.listened());
        drop(tap.listen());
        assert!(tap.listened(), "one listener left");
        let payload = vec![b'x'; PAYLOAD_SHOWN + 50];
        let long = "é".repeat(ATTRIBUTE_BYTES_SHOWN);
        let attributes = [
            ("seq".to_string(), "7".to_string()),
            ("long".to_string(), long),
        ];
        tap.send(TappedRecord::new(
            Direction::Produced,
            "/default/t",
            Some("k\n1"),
            attributes.iter().map(|(k, v)| (k, v)),
            &payload,
        ));
        let record = listener.try_recv().unwrap();
        assert_eq!(record.payload.len(), PAYLOAD_SHOWN);
        assert_eq!(record.attributes[1].1.len(), ATTRIBUTE_BYTES_SHOWN);
        let line = record.line();
        let shown_long = "é".repeat(ATTRIBUTE_BYTES_SHOWN / 2);
        assert!(
            line.starts_with(&format!(
                "-> /default/t key=k\\n1 seq=7 long={shown_long} xxx"
            )),
            "{line}"
        );
        assert!(
            line.ends_with(&format!("… ({} bytes)", PAYLOAD_SHOWN + 50)),
            "{line}"
        );
    }

    #[test]
    fn a_listener_that_falls_behind_loses_the_oldest() {
        let tap = Tap::default();
        let mut listener = tap.listen();
        for i in 0..BACKLOG + 10 {
            tap.send(TappedRecord::new(
                Direction::Consumed,
                "/default/t",
                None,
                [],
                i.to_string().as_bytes(),
            ));
        }
        assert!(matches!(
            listener.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
        assert_eq!(listener.try_recv().unwrap().payload, b"10");
    }
}
