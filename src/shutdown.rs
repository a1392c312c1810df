//! Ctrl-C and SIGTERM end a server cleanly: the first one cancels a token so
//! every task flushes what it received; a second one exits at once, for when
//! the output itself is stuck.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C or SIGTERM; exits with 130 on the second.
///
/// The handlers are installed before this returns, so a signal that comes
/// right after start (a service manager stopping us) is not lost to the
/// default action, which would end the process without a flush.
pub fn cancel_on_signal(token: CancellationToken) {
    let Ok(mut signals) = Signals::install() else {
        return; // no signal handling here; the default action still ends us
    };
    tokio::spawn(async move {
        signals.next().await;
        token.cancel();
        signals.next().await;
        std::process::exit(130);
    });
}

#[cfg(unix)]
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
