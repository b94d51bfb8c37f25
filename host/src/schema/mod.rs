//! Schemas: the `[[schemas]]` of a source registered or checked in Danube's
//! schema registry at start, payloads checked (and Avro encoded) before they
//! are published, and consumed messages matched against a sink route's
//! expected subject and decoded for the sink.
//!
//! The pipelines call into this module; all schema logic lives here.

mod codec;
mod registry;

pub use codec::Codec;
pub use registry::{
    MessageSchemas, Registry, SchemaError, SchemaRules, SourceSchemas, Verdict, read_schema_file,
};
