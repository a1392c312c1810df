//! Ctrl-C and SIGTERM end a server cleanly: the first one cancels a token so
//! every task flushes what it received; a second one exits at once, for when
//! the output itself is stuck.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C or SIGTERM; exits with 130 on the second.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        if wait_for_signal().await.is_err() {
            return; // no signal handling here; the default action still ends us
        }
        token.cancel();
        if wait_for_signal().await.is_ok() {
            std::process::exit(130);
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
