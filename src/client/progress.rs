//! Progress of a long send on stderr (bytes, rate, ETA), only when a person
//! is watching: with stderr not a terminal, nothing is drawn or printed.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use tokio::io::AsyncRead;

/// A progress bar for one send.
pub struct Progress {
    bar: ProgressBar,
    started: Instant,
}

impl Progress {
    /// A bar when stderr is a terminal: with an ETA when the size is known,
    /// a running count otherwise.
    pub fn on_terminal(total: Option<u64>) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::new(total),
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ),
            None => (
                ProgressBar::no_length(),
                "{spinner} {bytes} {bytes_per_sec}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Some(Progress {
            bar,
            started: Instant::now(),
        })
    }

    /// Counts what is read through `input`.
    pub fn wrap<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        input: R,
    ) -> Box<dyn AsyncRead + Unpin + Send> {
        Box::new(self.bar.wrap_async_read(input))
    }

    /// Clears the bar and says what was sent, how fast.
    pub fn finish(self) {
        self.bar.finish_and_clear();
        let bytes = self.bar.position();
        let elapsed = self.started.elapsed();
        let rate = bytes as f64 / elapsed.as_secs_f64().max(1e-6);
        crate::sink::say(&format!(
            "sent {} in {:.2}s ({}/s)",
            HumanBytes(bytes),
            elapsed.as_secs_f64(),
            HumanBytes(rate as u64)
        ));
    }
}
