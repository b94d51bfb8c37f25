//! Length-prefixed frames over a byte stream, bounded in size.

use std::io::{self, Read, Write};

use serde::{Serialize, de::DeserializeOwned};

/// Frames larger than this are refused: a corrupt length never makes a process
/// allocate gigabytes.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// Room reserved for a frame's body before its bytes arrive; larger bodies
/// grow as they are read.
const PREALLOCATE_BYTES: usize = 1024 * 1024;

/// Writes one frame and flushes it.
pub fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> io::Result<()> {
    let body = postcard::to_allocvec(message).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::other(format!(
            "frame of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit",
            body.len()
        )));
    }
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(&body)?;
    out.flush()
}

/// Reads one frame. `Ok(None)` means the peer closed the stream between frames.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> io::Result<Option<T>> {
    // A close between frames is clean; a close inside the length is not.
    let mut len = [0u8; 4];
    let mut filled = 0;
    while filled < len.len() {
        match input.read(&mut len[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
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
    // Memory follows the bytes that arrive, not the length announced: a
    // corrupt length on a short stream costs no large allocation.
    let mut body = Vec::with_capacity(len.min(PREALLOCATE_BYTES));
    input.take(len as u64).read_to_end(&mut body)?;
    if body.len() < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the stream ended inside a frame: {} of {len} bytes",
                body.len()
            ),
        ));
    }
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
