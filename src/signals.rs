//! Ctrl-C and SIGTERM end a server cleanly: the first one cancels a token so
//! every task flushes what it received; a second one exits at once, for when
//! the output itself is stuck. The binary's own: the library never ends the
//! process, it takes a token to stop on.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first Ctrl-C or SIGTERM; exits with 130 on the second.
///
/// The handlers are installed before this returns, so a signal that comes
/// right after start (a service manager stopping us) is not lost to the
/// default action, which would end the process without a flush.
pub(crate) fn cancel_on_signal(token: CancellationToken) {
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

/// A flag SIGHUP sets: `-o FILE` is reopened before the next message, so
/// `logrotate` can move the file away. `None` where there is no SIGHUP.
#[cfg(unix)]
pub(crate) fn reopen_on_sighup() -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let flag = std::sync::Arc::default();
    signal_hook::flag::register(signal_hook::consts::SIGHUP, std::sync::Arc::clone(&flag)).ok()?;
    Some(flag)
}

#[cfg(not(unix))]
pub(crate) fn reopen_on_sighup() -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    None
}

/// The self-pipe: the handlers write a byte per signal, the server reads
/// them. (tokio's own signal support keeps a table for every signal number,
/// 22 KiB of heap in every process, and a driver in the runtime.)
#[cfg(unix)]
struct Signals {
    pipe: tokio::net::unix::pipe::Receiver,
}

#[cfg(unix)]
impl Signals {
    fn install() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::low_level::pipe::register;
        let (sender, pipe) = tokio::net::unix::pipe::pipe()?;
        let sender = sender.into_nonblocking_fd()?;
        register(SIGTERM, sender.try_clone()?)?;
        register(SIGINT, sender)?;
        Ok(Signals { pipe })
    }

    async fn next(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        // One byte per signal; an error here cannot be mended, so treat it
        // as the signal rather than never stopping.
        let _ = self.pipe.read(&mut byte).await;
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
