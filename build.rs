//! Link-time layout of the release binary. The functions a listener runs
//! before its first client are placed side by side (`link/startup.order`,
//! made by `bench/startup-order.sh`): the kernel maps code in 64 KiB blocks
//! around each page touched, so scattered start-up code makes most of the
//! text resident in every process. Only where rust-lld links (the default
//! for x86_64 Linux); other linkers do not know the option.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link/startup.order");
    println!("cargo:rerun-if-env-changed=PORTIER_LINK_MAP");
    let default_linker = env::var_os("RUSTC_LINKER").is_none();
    let target = env::var("TARGET").unwrap_or_default();
    let release = env::var("PROFILE").as_deref() == Ok("release");
    if !(default_linker && release && target == "x86_64-unknown-linux-gnu") {
        return;
    }
    let order = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/startup.order");
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Names missing from an older order file are skipped, not errors.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    // bench/startup-order.sh asks for the link map, to name what ran.
    if let Some(map) = env::var_os("PORTIER_LINK_MAP") {
        let map = Path::new(&map).display().to_string();
        println!("cargo:rustc-link-arg-bins=-Wl,-Map={map}");
    }
}
