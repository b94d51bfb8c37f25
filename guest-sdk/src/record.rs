//! Records and the settings a connector returns from `open`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ConnectorError;

/// A position in one of the source's input streams.
///
/// `stream` names an input the source reads from (a file, an MQTT session, a
/// partition of an upstream log) and `position` grows with every record polled
/// from it. The host hands an offset back through `Source::commit` only after
/// the broker acknowledged that record and every record polled before it from
/// the same stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Offset {
    /// The input stream's name.
    pub stream: String,
    /// The record's position within it.
    pub position: u64,
}

impl Offset {
    /// An offset in `stream` at `position`.
    pub fn new(stream: impl Into<String>, position: u64) -> Self {
        Self {
            stream: stream.into(),
            position,
        }
    }
}

/// One message a source hands to the host to publish to Danube.
///
/// ```
/// use danube_connect_sdk::SourceRecord;
///
/// let record = SourceRecord::from_string("/default/events", "hello")
///     .with_key("device-7")
///     .with_attribute("origin", "sensor")
///     .with_offset("sensor-feed", 42);
/// assert_eq!(record.payload, b"hello");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Destination topic, `/namespace/name`; one of the topics returned by
    /// `open`.
    pub topic: String,
    /// The message body.
    pub payload: Vec<u8>,
    /// Message attributes (key-value metadata).
    pub attributes: Vec<(String, String)>,
    /// Routing key: on a partitioned topic, records with the same key go to
    /// the same partition and keep their order.
    pub key: Option<String>,
    /// Where the record came from, for `commit`; records without an offset
    /// are published but never committed.
    pub offset: Option<Offset>,
}

impl SourceRecord {
    /// A record with raw bytes as its payload.
    pub fn from_bytes(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            attributes: Vec::new(),
            key: None,
            offset: None,
        }
    }

    /// A record with UTF-8 text as its payload.
    pub fn from_string(topic: impl Into<String>, payload: impl Into<String>) -> Self {
        Self::from_bytes(topic, payload.into().into_bytes())
    }

    /// A record with `value` serialized as JSON as its payload. Fails (as
    /// invalid data) only if `value` cannot be represented in JSON.
    pub fn from_json<T: Serialize + ?Sized>(
        topic: impl Into<String>,
        value: &T,
    ) -> Result<Self, ConnectorError> {
        Ok(Self::from_bytes(topic, serde_json::to_vec(value)?))
    }

    /// Adds an attribute.
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// Sets the routing key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the offset committed back once the broker acknowledged the record.
    pub fn with_offset(mut self, stream: impl Into<String>, position: u64) -> Self {
        self.offset = Some(Offset::new(stream, position));
        self
    }
}

/// The schema a message was published with, as recorded by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRef {
    /// Schema subject.
    pub subject: String,
    /// Schema version.
    pub version: u32,
}

/// One message consumed from Danube and handed to a sink.
///
/// ```
/// use danube_connect_sdk::SinkRecord;
///
/// #[derive(serde::Deserialize)]
/// struct Reading { temp: f64 }
///
/// let record = SinkRecord::new("/default/readings", br#"{"temp": 21.5}"#.to_vec())
///     .with_attribute("unit", "C");
/// let reading: Reading = record.payload_json()?;
/// assert_eq!(reading.temp, 21.5);
/// assert_eq!(record.attribute("unit"), Some("C"));
/// # Ok::<(), danube_connect_sdk::ConnectorError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) attributes: Vec<(String, String)>,
    pub(crate) key: Option<String>,
    pub(crate) publish_time: u64,
    pub(crate) producer: String,
    pub(crate) offset: u64,
    pub(crate) redelivery_count: u32,
    pub(crate) schema: Option<SchemaRef>,
}

impl SinkRecord {
    /// A record as the host would deliver it, for a sink's own tests: no
    /// attributes, no key, offset 0, publish time 0, first delivery.
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            attributes: Vec::new(),
            key: None,
            publish_time: 0,
            producer: String::new(),
            offset: 0,
            redelivery_count: 0,
            schema: None,
        }
    }

    /// Adds an attribute (for tests).
    pub fn with_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((key.into(), value.into()));
        self
    }

    /// Sets the key (for tests).
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the topic offset (for tests).
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// Sets the publish time in milliseconds since the Unix epoch (for tests).
    pub fn with_publish_time(mut self, millis: u64) -> Self {
        self.publish_time = millis;
        self
    }

    /// Sets the redelivery count (for tests).
    pub fn with_redelivery_count(mut self, count: u32) -> Self {
        self.redelivery_count = count;
        self
    }

    /// The topic the message was read from (a partition reads as
    /// `/namespace/name-part-N`).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic the message belongs to: a partition's `/namespace/name`
    /// without its `-part-N`, as the connector named it in `open`.
    pub fn base_topic(&self) -> &str {
        match self.topic.rsplit_once("-part-") {
            Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => &self.topic,
        }
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The payload, by value.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }

    /// The payload as UTF-8 text; a payload that is not UTF-8 is invalid data.
    pub fn payload_str(&self) -> Result<&str, ConnectorError> {
        Ok(std::str::from_utf8(&self.payload)?)
    }

    /// The payload parsed as JSON into `T`; a payload that does not parse is
    /// invalid data (so `?` sends the record to the dead-letter topic).
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| ConnectorError::invalid_data(format!("payload is not valid JSON: {e}")))
    }

    /// All attributes, in the order the producer set them.
    pub fn attributes(&self) -> &[(String, String)] {
        &self.attributes
    }

    /// The value of attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The routing key, if the producer set one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Publish time, milliseconds since the Unix epoch (set by the producer,
    /// as the WIT says).
    pub fn publish_time(&self) -> u64 {
        self.publish_time
    }

    /// Name of the producer that published the message.
    pub fn producer(&self) -> &str {
        &self.producer
    }

    /// The message's offset within its topic (or partition).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many times this message was handed to a sink before (0 on first
    /// delivery). A redelivered record may already have been written.
    pub fn redelivery_count(&self) -> u32 {
        self.redelivery_count
    }

    /// The schema the message was published with, if any.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }
}

/// A topic a source publishes to, and how.
///
/// `ProducerConfig::new(topic)` is a plain (unpartitioned), reliable topic
/// without a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// `/namespace/name`.
    pub topic: String,
    /// 0: a plain topic; N > 0: N partitions `name-part-0..N-1` (1 is one
    /// partition, as danube-connect has it), chosen per record by its key.
    pub partitions: u32,
    /// Reliable dispatch: the broker stores messages and tracks
    /// acknowledgements per subscription.
    pub reliable: bool,
    /// Schema subject the producer attaches to its messages.
    pub schema_subject: Option<String>,
}

impl ProducerConfig {
    /// A plain, reliable topic without a schema.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            partitions: 0,
            reliable: true,
            schema_subject: None,
        }
    }

    /// Sets the number of partitions (0: unpartitioned).
    pub fn with_partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets reliable (stored, acknowledged) or non-reliable dispatch.
    pub fn with_reliable(mut self, reliable: bool) -> Self {
        self.reliable = reliable;
        self
    }

    /// Sets the schema subject the producer attaches to its messages.
    pub fn with_schema_subject(mut self, subject: impl Into<String>) -> Self {
        self.schema_subject = Some(subject.into());
        self
    }
}

/// How a subscription shares messages between its consumers.
///
/// Deserializes from `"exclusive"`, `"shared"`, `"failover"` or
/// `"key_shared"`, in any case and with `-`, `_` or nothing between words
/// (danube-connect writes `"Exclusive"`, `"Shared"`, `"FailOver"`), so it
/// can sit in a connector's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum SubscriptionType {
    /// One consumer only.
    Exclusive,
    /// Messages spread over all consumers.
    #[default]
    Shared,
    /// One active consumer; the others take over if it goes away.
    Failover,
    /// Messages with the same key always go to the same consumer.
    KeyShared,
}

/// A string: the names are read in any case, which an enum schema would not
/// say.
impl schemars::JsonSchema for SubscriptionType {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SubscriptionType".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "exclusive, shared, failover or key_shared, in any case and with -, _ or nothing between words",
        })
    }
}

impl TryFrom<String> for SubscriptionType {
    type Error = ConnectorError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl std::str::FromStr for SubscriptionType {
    type Err = ConnectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "exclusive" => Ok(Self::Exclusive),
            "shared" => Ok(Self::Shared),
            "failover" => Ok(Self::Failover),
            "keyshared" => Ok(Self::KeyShared),
            other => Err(ConnectorError::config(format!(
                "unknown subscription type `{other}`, expected one of exclusive, shared, failover, key_shared"
            ))),
        }
    }
}

/// A topic a sink consumes from, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// `/namespace/name`; a partitioned topic is consumed across all its
    /// partitions.
    pub topic: String,
    /// Subscription name; it keeps its position across restarts.
    pub subscription: String,
    /// How the subscription shares messages between consumers.
    pub subscription_type: SubscriptionType,
    /// If set, records whose schema subject differs go to the dead-letter
    /// topic instead of the sink.
    pub expected_schema_subject: Option<String>,
    /// Payloads published with an Avro schema arrive as JSON (the default) or,
    /// when false, as the Avro binary the broker holds.
    pub decode_avro: bool,
}

impl ConsumerConfig {
    /// A shared subscription `subscription` on `topic`.
    pub fn new(topic: impl Into<String>, subscription: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            subscription: subscription.into(),
            subscription_type: SubscriptionType::Shared,
            expected_schema_subject: None,
            decode_avro: true,
        }
    }

    /// Sets the subscription type.
    pub fn with_subscription_type(mut self, subscription_type: SubscriptionType) -> Self {
        self.subscription_type = subscription_type;
        self
    }

    /// Only records with this schema subject reach the sink.
    pub fn with_expected_schema_subject(mut self, subject: impl Into<String>) -> Self {
        self.expected_schema_subject = Some(subject.into());
        self
    }

    /// Avro payloads arrive as the Avro binary they were published as, not
    /// decoded to JSON: for sinks that store or forward Avro unchanged.
    pub fn with_avro_bytes(mut self) -> Self {
        self.decode_avro = false;
        self
    }
}

/// What a connector says about itself (`danube-host inspect`).
///
/// Fields left empty are filled by the export macro: `name` and `version`
/// from the connector crate's `Cargo.toml`, `description` from its
/// `description` key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// Short name, e.g. `mqtt-source`.
    pub name: String,
    /// The connector's own version.
    pub version: String,
    /// One or two sentences for people.
    pub description: String,
    /// An example of the connector's configuration table, in TOML, with every
    /// key it understands.
    pub config_example: String,
}

impl ConnectorInfo {
    /// Info with a description and a config example; name and version come
    /// from the connector crate.
    pub fn new(description: impl Into<String>, config_example: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            config_example: config_example.into(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{SinkRecord, SubscriptionType};

    #[test]
    fn partitions_read_as_their_topic() {
        let base = |topic: &str| SinkRecord::new(topic, Vec::new()).base_topic().to_string();
        assert_eq!(base("/default/a-part-3"), "/default/a");
        assert_eq!(base("/default/a"), "/default/a");
        assert_eq!(base("/default/a-part-x"), "/default/a-part-x");
        assert_eq!(base("/default/a-part-"), "/default/a-part-");
    }

    /// Our spellings and danube-connect's read the same; others are refused
    /// naming the accepted ones.
    #[test]
    fn subscription_types_read_in_either_spelling() {
        for (text, expected) in [
            ("exclusive", SubscriptionType::Exclusive),
            ("Exclusive", SubscriptionType::Exclusive),
            ("Shared", SubscriptionType::Shared),
            ("FailOver", SubscriptionType::Failover),
            ("failover", SubscriptionType::Failover),
            ("key_shared", SubscriptionType::KeyShared),
            ("key-shared", SubscriptionType::KeyShared),
            ("KeyShared", SubscriptionType::KeyShared),
        ] {
            let parsed: SubscriptionType = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(parsed, expected, "{text}");
        }
        let e =
            serde_json::from_value::<SubscriptionType>(serde_json::json!("broadcast")).unwrap_err();
        assert!(e.to_string().contains("expected one of exclusive"), "{e}");
    }
}
