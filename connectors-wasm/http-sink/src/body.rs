//! Records as request bodies: each record encoded once as an element, and
//! elements joined into the bodies of `json_array` and `ndjson` requests of
//! at most `max_request_bytes`.

use danube_connect_sdk::{ConnectorError, SinkRecord};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;

use crate::config::Format;

/// One record, encoded.
pub struct Element {
    /// Its index in the batch.
    pub record: usize,
    pub bytes: Vec<u8>,
}

/// How each record is encoded.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    pub format: Format,
    pub envelope: bool,
}

/// A record with its Danube metadata, as `envelope = true` sends it.
struct Envelope<'a> {
    record: &'a SinkRecord,
    payload: &'a RawValue,
}

impl Serialize for Envelope<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.record;
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("topic", record.topic())?;
        map.serialize_entry("offset", &record.offset())?;
        map.serialize_entry("key", &record.key())?;
        map.serialize_entry("publish_time", &record.publish_time())?;
        map.serialize_entry("producer", record.producer())?;
        map.serialize_entry("attributes", &Attributes(record.attributes()))?;
        map.serialize_entry("payload", self.payload)?;
        map.end()
    }
}

/// Attributes as a JSON object, in the producer's order.
struct Attributes<'a>(&'a [(String, String)]);

impl Serialize for Attributes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl Encoding {
    /// `record` as one element of a body; a payload that must be JSON and
    /// is not is invalid data.
    pub fn element(&self, index: usize, record: &SinkRecord) -> Result<Element, ConnectorError> {
        if self.format == Format::Single && !self.envelope {
            return Ok(Element {
                record: index,
                bytes: record.payload().to_vec(),
            });
        }
        let payload: &RawValue = serde_json::from_slice(record.payload()).map_err(|e| {
            ConnectorError::invalid_data(format!(
                "payload is not valid JSON ({e}); `format = \"single\"` without `envelope` sends payloads as they are"
            ))
        })?;
        let mut bytes = if self.envelope {
            serde_json::to_vec(&Envelope { record, payload })
                .map_err(|e| ConnectorError::invalid_data(e.to_string()))?
        } else {
            payload.get().as_bytes().to_vec()
        };
        // A line of NDJSON is one record: JSON text with line breaks
        // between its tokens is written again without them.
        if self.format == Format::Ndjson && bytes.contains(&b'\n') {
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ConnectorError::invalid_data(e.to_string()))?;
            bytes = serde_json::to_vec(&value)
                .map_err(|e| ConnectorError::invalid_data(e.to_string()))?;
        }
        Ok(Element {
            record: index,
            bytes,
        })
    }

    /// The body of one request carrying `elements`.
    pub fn body(&self, elements: &[Element]) -> Vec<u8> {
        let size: usize = elements.iter().map(|e| e.bytes.len() + 1).sum();
        let mut body = Vec::with_capacity(size + 2);
        match self.format {
            Format::JsonArray => {
                body.push(b'[');
                for (i, element) in elements.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(&element.bytes);
                }
                body.push(b']');
            }
            Format::Ndjson => {
                for element in elements {
                    body.extend_from_slice(&element.bytes);
                    body.push(b'\n');
                }
            }
            Format::Single => {
                for element in elements {
                    body.extend_from_slice(&element.bytes);
                }
            }
        }
        body
    }

    /// `elements` cut into the runs that make one request each: one element
    /// per request for `single`, otherwise as many as fit in `max_bytes`
    /// (an element larger than that goes alone).
    pub fn requests(&self, elements: &[Element], max_bytes: usize) -> Vec<std::ops::Range<usize>> {
        let mut runs = Vec::new();
        let mut start = 0;
        let mut size = 2;
        for (i, element) in elements.iter().enumerate() {
            let grown = size + element.bytes.len() + 1;
            let full = self.format == Format::Single || grown > max_bytes;
            if i > start && full {
                runs.push(start..i);
                start = i;
                size = 2 + element.bytes.len() + 1;
            } else {
                size = grown;
            }
        }
        if start < elements.len() {
            runs.push(start..elements.len());
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoding(format: Format, envelope: bool) -> Encoding {
        Encoding { format, envelope }
    }

    fn elements(encoding: Encoding, payloads: &[&str]) -> Vec<Element> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                encoding
                    .element(i, &SinkRecord::new("/default/a", p.as_bytes().to_vec()))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn bodies_in_each_format() {
        let payloads = [r#"{"n": 1}"#, "{\n\"n\": 2\n}", "[3]"];
        let array = encoding(Format::JsonArray, false);
        let body = array.body(&elements(array, &payloads));
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed, serde_json::json!([{"n": 1}, {"n": 2}, [3]]));

        let ndjson = encoding(Format::Ndjson, false);
        let body = String::from_utf8(ndjson.body(&elements(ndjson, &payloads))).unwrap();
        assert_eq!(body, "{\"n\": 1}\n{\"n\":2}\n[3]\n");

        let single = encoding(Format::Single, false);
        let raw = single
            .element(0, &SinkRecord::new("/default/a", vec![0xff, 0]))
            .unwrap();
        assert_eq!(raw.bytes, vec![0xff, 0]);
    }

    #[test]
    fn envelopes_carry_the_metadata() {
        let record = SinkRecord::new("/default/a-part-1", br#"{"n":1}"#.to_vec())
            .with_offset(7)
            .with_key("k")
            .with_attribute("b", "2")
            .with_attribute("a", "1");
        let element = encoding(Format::JsonArray, true)
            .element(0, &record)
            .unwrap();
        let text = String::from_utf8(element.bytes).unwrap();
        assert!(
            text.starts_with(r#"{"topic":"/default/a-part-1","offset":7,"key":"k","#),
            "{text}"
        );
        assert!(
            text.ends_with(r#""attributes":{"b":"2","a":"1"},"payload":{"n":1}}"#),
            "{text}"
        );
    }

    #[test]
    fn a_payload_that_must_be_json_and_is_not_is_invalid_data() {
        for (format, envelope) in [
            (Format::JsonArray, false),
            (Format::Ndjson, false),
            (Format::Single, true),
        ] {
            let e = encoding(format, envelope)
                .element(0, &SinkRecord::new("/default/a", b"not json".to_vec()))
                .err()
                .unwrap();
            assert!(matches!(e, ConnectorError::InvalidData(_)), "{e:?}");
            assert!(e.message().contains("not valid JSON"), "{e}");
        }
    }

    #[test]
    fn batches_are_cut_at_the_size_bound() {
        let array = encoding(Format::JsonArray, false);
        // Each element is 10 bytes; a body of k of them is 2 + 11k - 1.
        let es = elements(array, &["1234567890"; 7]);
        assert_eq!(array.requests(&es, 35), vec![0..3, 3..6, 6..7]);
        assert_eq!(array.requests(&es, 1 << 20), vec![0..7]);
        assert_eq!(
            array.requests(&es, 5),
            (0..7).map(|i| i..i + 1).collect::<Vec<_>>()
        );
        for run in array.requests(&es, 35) {
            assert!(array.body(&es[run]).len() <= 35);
        }
        let single = encoding(Format::Single, false);
        assert_eq!(single.requests(&es, 1 << 20).len(), 7);
        assert!(array.requests(&[], 10).is_empty());
    }
}
