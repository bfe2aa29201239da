#!/usr/bin/env bash
# The whole test suite, from a fresh machine: formatting, lints, then every test in release
# mode (the fidelity tests replay full paper traces). Reads ../shared (traces, goldens).
# Builds go to $CARGO_TARGET_DIR (default: ~/.cache/muri-rs/target) so reruns are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
if [ ! -f ../shared/reference/goldens.csv ]; then
  echo "error: ../shared (traces and reference numbers) must sit next to this repository" >&2
  exit 1
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --release --all-targets -- -D warnings
echo "== cargo test --release"
cargo test --release --all-targets
