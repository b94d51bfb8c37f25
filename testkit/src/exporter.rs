//! The broker's Prometheus page, as the real broker's `--prom-exporter`
//! serves it, for the figures the host reads there: a subscription's lag
//! and active consumers, a topic's messages in (see
//! `Topics::exposition`). Plain HTTP/1.1 on a port of its own, as on the
//! real broker; it serves until the broker is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::Core;

/// Binds a free port beside the broker's and serves its page there.
pub(crate) async fn serve(
    core: Arc<Core>,
    beside: SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::new(beside.ip(), 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let core = Arc::clone(&core);
            let stop = stop.clone();
            tokio::spawn(async move {
                let page = service_fn(move |_: Request<hyper::body::Incoming>| {
                    let text = core.read(|state| state.topics.exposition());
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(text)))
                                .expect("a valid response"),
                        )
                    }
                });
                let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), page);
                tokio::select! {
                    _ = connection => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(addr)
}
