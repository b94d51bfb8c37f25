//! Length-prefixed frames over a byte stream, bounded in size.
//!
//! The hot path (a batch each way, thousands of times a second) encodes
//! into a buffer kept across frames and reads into one, so a large frame
//! costs no allocation and no growth copies; each frame is one `write`, so
//! the peer wakes once per frame, not once for the length and again for the
//! body.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Frames larger than this are refused: a corrupt length never makes a process
/// allocate gigabytes.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Room reserved for a frame's body before its bytes arrive; larger bodies
/// grow as they are read.
const PREALLOCATE_BYTES: usize = 1024 * 1024;

/// A buffer kept across frames is dropped once it grew past this, so that
/// one huge frame does not pin its memory for the life of the process.
const KEEP_BYTES: usize = 8 * 1024 * 1024;

const LENGTH_BYTES: usize = 4;

/// Writes frames to `out`, encoding each into a buffer kept for the next.
pub struct FrameWriter<W> {
    out: W,
    buffer: Vec<u8>,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(out: W) -> FrameWriter<W> {
        FrameWriter {
            out,
            buffer: Vec::new(),
        }
    }

    /// Writes one frame and flushes it.
    pub fn send<T: Serialize>(&mut self, message: &T) -> io::Result<()> {
        let result = encode(message, &mut self.buffer).and_then(|frame| {
            self.out.write_all(frame)?;
            self.out.flush()
        });
        if self.buffer.capacity() > KEEP_BYTES {
            self.buffer = Vec::new();
        }
        result
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

/// Writes one frame and flushes it (for frames sent once; a stream of them
/// goes through a [`FrameWriter`]).
pub fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> io::Result<()> {
    FrameWriter::new(out).send(message)
}

/// Encodes `message` as a whole frame, length first, into `buffer`.
fn encode<'b, T: Serialize>(message: &T, buffer: &'b mut Vec<u8>) -> io::Result<&'b [u8]> {
    buffer.clear();
    buffer.extend_from_slice(&[0; LENGTH_BYTES]);
    *buffer = postcard::to_extend(message, std::mem::take(buffer)).map_err(io::Error::other)?;
    let len = buffer.len() - LENGTH_BYTES;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!(
            "frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
        )));
    }
    buffer[..LENGTH_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buffer)
}

/// Reads one frame. `Ok(None)` means the peer closed the stream between frames.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut body = Vec::new();
    if !read_body(input, &mut body)? {
        return Ok(None);
    }
    decode(&body).map(Some)
}

/// Reads one frame's body into `body` (replacing what it held), to be
/// [`decode`]d borrowing from it. `Ok(false)` means the peer closed the
/// stream between frames.
pub fn read_body(input: &mut impl Read, body: &mut Vec<u8>) -> io::Result<bool> {
    // A close between frames is clean; a close inside the length is not.
    let mut len = [0u8; LENGTH_BYTES];
    let mut filled = 0;
    while filled < len.len() {
        match input.read(&mut len[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the stream ended inside a frame's length",
                ));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"),
        ));
    }
    body.clear();
    if body.capacity() > KEEP_BYTES.max(len) {
        *body = Vec::new();
    }
    // Memory follows the bytes that arrive, not the length announced: a
    // corrupt length on a short stream costs no large allocation.
    body.reserve(len.min(PREALLOCATE_BYTES));
    input.take(len as u64).read_to_end(body)?;
    if body.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the stream ended inside a frame: {} of {len} bytes",
                body.len()
            ),
        ));
    }
    Ok(true)
}

/// Decodes a frame's body; what `T` borrows (strings, bytes) points into it.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> io::Result<T> {
    postcard::from_bytes(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
