//! Link-time layout of the release binary, for packaging only: applied when
//! `PORTIER_STARTUP_LAYOUT=1` (set by `packaging/deb.sh`), so an ordinary
//! `cargo build` works with any linker and target (a Pi, cross-compiled).
//!
//! The functions a listener runs before its first client are placed side by
//! side (`link/startup.order`), and so are the constants it reads
//! (`link/startup-rodata.ld`), both made by `bench/startup_order.py`: the
//! kernel maps a file in 64 KiB blocks around each page touched, so scattered
//! start-up code and data make most of the binary resident in every process.
//! Only where rust-lld links (the default for x86_64 Linux); other linkers do
//! not know the options. The packaging build checks that the order still
//! matches the code (`bench/startup_order.py --check`).

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link/startup.order");
    println!("cargo:rerun-if-changed=link/startup.ld");
    println!("cargo:rerun-if-changed=link/startup-rodata.ld");
    println!("cargo:rerun-if-env-changed=PORTIER_LINK_MAP");
    println!("cargo:rerun-if-env-changed=PORTIER_STARTUP_LAYOUT");
    if env::var("PORTIER_STARTUP_LAYOUT").as_deref() != Ok("1") {
        return;
    }
    let default_linker = env::var_os("RUSTC_LINKER").is_none();
    let target = env::var("TARGET").unwrap_or_default();
    let release = env::var("PROFILE").as_deref() == Ok("release");
    if !(default_linker && release && target == "x86_64-unknown-linux-gnu") {
        println!(
            "cargo:warning=PORTIER_STARTUP_LAYOUT needs a release build for x86_64-unknown-linux-gnu with the default linker (rust-lld); built without the layout"
        );
        return;
    }
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/startup.order");
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Linker script fragments added to lld's default layout: .init and .plt
    // next to the start-up code; the constants read at start together.
    for script in ["link/startup.ld", "link/startup-rodata.ld"] {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
    // Names missing from an older order file are skipped, not errors.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    // Compact relative relocations (DT_RELR): the loader reads a few KiB of
    // relocations at start instead of 80 KiB, and with libgcc's unwinder
    // linked in, libgcc_s (92 KiB resident) is not loaded: together 0.2 MiB
    // less idle RSS (BENCHMARKS.md). Such a binary needs glibc 2.36 or later
    // (Debian 12, Ubuntu 24.04), so only where the build machine has it, for
    // itself; `dpkg-shlibdeps` then asks for libc6 (>= 2.36) in the .deb.
    if env::var("HOST").as_deref() == Ok(target.as_str()) && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        if let Some(dir) = libgcc_eh_dir() {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=static=gcc_eh");
        }
    }
    // bench/startup_order.py asks for the link map, to name what ran.
    if let Some(map) = env::var_os("PORTIER_LINK_MAP") {
        let map = Path::new(&map).display().to_string();
        println!("cargo:rustc-link-arg-bins=-Wl,-Map={map}");
    }
}

/// True if this machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36") is
/// at least MAJOR.MINOR; false if it cannot tell.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|part| part.parse::<u32>().ok());
    match (version.next().flatten(), version.next().flatten()) {
        (Some(found_major), Some(found_minor)) => (found_major, found_minor) >= (major, minor),
        _ => false,
    }
}

/// Where the C compiler (the linker driver) keeps libgcc_eh.a, if it has one.
fn libgcc_eh_dir() -> Option<std::path::PathBuf> {
    let out = std::process::Command::new("cc")
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Without it, cc prints the bare name back.
    if path.is_absolute() && path.exists() {
        path.parent().map(Path::to_path_buf)
    } else {
        None
    }
}
