#!/usr/bin/env bash
# Builds target/debian/portier_VERSION_ARCH.deb: the release binary, man pages
# and shell completions generated from the CLI definitions, and the systemd unit.
# Needs cargo-deb (`cargo install cargo-deb --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

# The start-up layout (build.rs), with the link map its freshness is checked against.
PORTIER_STARTUP_LAYOUT=1 PORTIER_LINK_MAP="$PWD/target/release/portier.map" \
  cargo build --release --locked
python3 bench/startup_order.py --check target/release/portier.map
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
target/release/portier man "$assets/man"
gzip -9n "$assets"/man/*.1
target/release/portier completions bash > "$assets/completions/portier.bash"
target/release/portier completions zsh > "$assets/completions/_portier"
target/release/portier completions fish > "$assets/completions/portier.fish"
# DT_RELR relocations (build.rs) need glibc >= 2.36, which the .deb must say.
variant=()
if grep -q GLIBC_ABI_DT_RELR target/release/portier; then
  variant=(--variant relr)
fi
cargo deb --no-build --locked "${variant[@]}"
