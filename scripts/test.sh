#!/usr/bin/env bash
# The whole test suite, from a fresh machine: formatting, lints, then every test in release
# mode (the fidelity tests replay full paper traces), the doc build, the matching and a
# fidelity subset with debug assertions (`ci` profile), then again with the heavy features
# (mpi, nccl, torch: real tch training). Reads ../shared (traces, goldens). Installs Open MPI
# (apt) and libtorch (pip, project-local .venv-torch) when missing.
# Builds go to $CARGO_TARGET_DIR (default: ~/.cache/muri-rs/target) so reruns are incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Traces whose reference rows run with debug assertions (the full set takes too long there).
CI_FIDELITY_TRACES="${CI_FIDELITY_TRACES:-trace1_first100,trace1_pr_first50,trace3_first400,trace3_pr_first100}"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
if [ ! -f ../shared/reference/goldens.csv ]; then
  echo "error: ../shared (traces and reference numbers) must sit next to this repository" >&2
  exit 1
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings"
cargo clippy --release --all-targets -- -D warnings
# The testbed's MPI path (issue 4) needs Open MPI and libclang; install them when missing and
# we may (root or passwordless sudo). Without them the default build needs nothing but Rust.
if ! command -v mpirun >/dev/null || ! command -v mpicc >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" != none ] && command -v apt-get >/dev/null; then
    echo "== installing Open MPI + libclang (testbed mpi feature)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenmpi-dev openmpi-bin libclang-dev clang >/dev/null \
      || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q libopenmpi-dev openmpi-bin libclang-dev clang >/dev/null; }
  fi
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "== cargo test --release"
cargo test --release --all-targets
echo "== cargo doc --no-deps (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
# The matching's self-checks (cfg(debug_assertions)) and overflow checks, in the optimised
# `ci` profile: the matching's tests, then the reference rows of a fidelity subset.
echo "== cargo test --profile ci (debug assertions): matching + fidelity subset"
cargo test --profile ci -p muri-core -p muri --lib
cargo test --profile ci -p muri --test matching
MURI_FIDELITY_TRACES="$CI_FIDELITY_TRACES" cargo test --profile ci -p muri --test fidelity reference_rows
# Every feature this machine can build: MPI (Open MPI above), NCCL (cudarc loads CUDA/NCCL at
# run time, so it builds anywhere; its GPU path needs a GPU to run) and torch (libtorch 2.13.0
# from pip into the project-local .venv-torch, no system packages).
# shellcheck source=torch-env.sh
. scripts/torch-env.sh
wl_features() { tr ',' '\n' <<< "$1" | grep '^muri-workloads/' | paste -sd, -; }
case $MURI_FEATURES in
  *mpi*)
    # The testbed through mpirun with emulated stages, using a trainer without libtorch (a
    # trainer that links libtorch spends most of a short emulated launch loading it).
    MPI_FEATURES=muri/mpi,muri-workloads/mpi,muri-workloads/nccl
    echo "== cargo test --release --features $MPI_FEATURES (testbed through mpirun)"
    cargo test --release --features "$(wl_features $MPI_FEATURES)" -p muri-workloads --test trainer_cli
    cargo test --release --features "$MPI_FEATURES" -p muri --test testbed_e2e
    ;;
  *) echo "== Open MPI is not installed: the mpi and nccl features are not tested" ;;
esac
echo "== cargo clippy + test --release --features $MURI_FEATURES (real tch models)"
cargo clippy --release --all-targets --features "$MURI_FEATURES" -- -D warnings
# The workloads package first: its tests build muri-trainer with these features, which the
# real-model testbed and profile tests of `muri` then launch.
cargo test --release --features "$(wl_features "$MURI_FEATURES")" -p muri-workloads
cargo test --release --features "$MURI_FEATURES" -p muri --test testbed_e2e real_models
cargo test --release --features "$MURI_FEATURES" -p muri --test profile_real
