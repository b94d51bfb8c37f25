//! The wire between the supervisor and its worker processes: frames
//! ([`frame`]) carrying the messages each side sends ([`messages`]).
//!
//! A frame is a 4-byte little-endian length followed by a postcard-encoded
//! message. The first frame each way is a handshake carrying
//! [`PROTOCOL_VERSION`], so a supervisor never drives a worker from another
//! build (which can happen when the binary is replaced while a supervisor
//! runs). What the messages carry into and out of the guest is the host's
//! mirror of the WIT contract, in [`crate::contract`].

mod frame;
mod messages;
#[cfg(test)]
mod tests;

pub use frame::{FrameWriter, MAX_FRAME_BYTES, decode, read_body, read_frame, write_frame};
pub use messages::{FromWorker, PROTOCOL_VERSION, SelfTest, ToWorker, WorkerInit};
