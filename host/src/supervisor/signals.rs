//! The host's signals: the first SIGTERM or SIGINT drains, a second exits.

use tokio::sync::watch;

/// Turns true on the first SIGTERM or SIGINT, asking for a drain; a second
/// one exits at once.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(watch_signals(shutdown_tx));
    shutdown
}

async fn watch_signals(shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received: draining (send it again to exit at once)");
    let _ = shutdown.send(true);
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(130);
}
