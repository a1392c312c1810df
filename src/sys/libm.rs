//! `pow` from Rust's own libm, in place of the system's: it is the only libm
//! function portier calls (the progress bar's rate estimate), and loading the
//! system libm for it maps half a MiB of code into every process (measured:
//! idle listener RSS, BENCHMARKS.md).

/// The C `pow`, for the linker to find before the system's libm.
// SAFETY: `pow` is defined nowhere else in this program (its only other
// definition is the system libm's, which this one is meant to replace), and it
// has the C signature and meaning every caller expects.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    ::libm::pow(x, y)
}
