//! What a guest may touch: the WASI context it gets (no environment, no
//! arguments; the directories [`files::grant`] opens and the TCP
//! destinations [`network::grant`] lets it reach) and where its stdout and
//! stderr go. The worker process's own confinement is in
//! [`super::hardening`].

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

use crate::capability::log::LogBudget;
use crate::capability::{SandboxLimits, files, network};

/// Builds the guest's WASI context. The guest sees none of the host's
/// environment variables or arguments: secrets reach it only through its
/// configuration table.
pub fn wasi_context(
    limits: &SandboxLimits,
    stdout: GuestOutput,
    stderr: GuestOutput,
) -> anyhow::Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(stdout).stderr(stderr);
    files::grant(&mut builder, &limits.dirs)?;
    network::grant(&mut builder, &limits.allow);
    Ok(builder.build())
}

/// A guest output stream. Complete lines go to the host's log, tagged with the
/// connector; the last few KiB are kept so that a trap can be explained with
/// the guest's own panic message.
#[derive(Clone)]
pub struct GuestOutput {
    inner: Arc<Mutex<OutputBuffer>>,
}

struct OutputBuffer {
    connector: String,
    stream: &'static str,
    budget: LogBudget,
    partial: Vec<u8>,
    tail: Vec<u8>,
}

const TAIL_BYTES: usize = 4096;
const MAX_LINE_BYTES: usize = 16 * 1024;

impl GuestOutput {
    pub fn new(connector: &str, stream: &'static str, budget: LogBudget) -> GuestOutput {
        GuestOutput {
            inner: Arc::new(Mutex::new(OutputBuffer {
                connector: connector.to_string(),
                stream,
                budget,
                partial: Vec::new(),
                tail: Vec::new(),
            })),
        }
    }

    /// The last few KiB written.
    pub fn tail(&self) -> String {
        let buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&buf.tail).into_owned()
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut buf = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        buf.tail.extend_from_slice(bytes);
        if buf.tail.len() > TAIL_BYTES {
            let cut = buf.tail.len() - TAIL_BYTES;
            buf.tail.drain(..cut);
        }
        buf.partial.extend_from_slice(bytes);
        while let Some(end) = buf.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.partial.drain(..=end).collect();
            buf.emit(&line[..line.len() - 1]);
        }
        if buf.partial.len() > MAX_LINE_BYTES {
            let line = std::mem::take(&mut buf.partial);
            buf.emit(&line);
        }
    }
}

impl OutputBuffer {
    fn emit(&self, line: &[u8]) {
        self.budget.output_line(&self.connector, self.stream, line);
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
