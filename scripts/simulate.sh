#!/usr/bin/env bash
# Runs the main job on the embedded default: the project's trace on cluster_spec/n8g8.csv,
# every policy, and prints the comparison table. Extra arguments go to `muri simulate`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
cargo build --release --quiet -p muri
exec "$CARGO_TARGET_DIR/release/muri" simulate "$@"
