//! Serving gRPC over HTTP/2 with connections the broker can cut at will.
//!
//! tonic's own server only shuts down gracefully, waiting for open streams to
//! finish, and consumer streams never do. Tests need the opposite: close
//! every connection now, as a crashed or restarted broker would. So the
//! broker runs its own accept loop and serves each connection in a task that
//! ends, dropping the socket, when the current connection token is cancelled.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tracing::{debug, warn};

/// The open connections, and the token that ends all of them.
#[derive(Debug)]
pub(crate) struct Connections {
    /// Parent of every connection token: cancelled when the broker is dropped.
    root: CancellationToken,
    current: Mutex<CancellationToken>,
    tracker: TaskTracker,
}

impl Connections {
    pub(crate) fn new(root: CancellationToken) -> Self {
        Connections {
            current: Mutex::new(root.child_token()),
            root,
            tracker: TaskTracker::new(),
        }
    }

    fn token(&self) -> CancellationToken {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Ends every open connection; later connections are unaffected.
    pub(crate) fn close_all(&self) {
        let fresh = self.root.child_token();
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        old.cancel();
    }

    /// Ends every open connection and waits until their tasks are gone.
    pub(crate) async fn close_all_and_wait(&self) {
        self.close_all();
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }

    fn serve(&self, stream: tokio::net::TcpStream, routes: Routes) {
        let token = self.token();
        self.tracker.spawn(async move {
            let service = TowerToHyperService::new(routes);
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        debug!(%error, "connection ended with an error");
                    }
                }
                () = token.cancelled() => debug!("connection closed by the broker"),
            }
        });
    }
}

/// Binds with `SO_REUSEADDR`, so that `restart` gets its port back at once
/// even though the connections the broker closed linger in TIME_WAIT.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections until `stop` is cancelled; the listener is dropped on
/// return, so the port refuses connections from then on.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    routes: Routes,
    connections: Arc<Connections>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                debug!(%peer, "connection accepted");
                // gRPC exchanges many small frames; Nagle's algorithm would delay them.
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%error, "could not set TCP_NODELAY");
                }
                connections.serve(stream, routes.clone());
            }
            Err(error) => {
                // Accept errors are per connection (or a transient lack of
                // file descriptors); back off briefly instead of spinning.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
