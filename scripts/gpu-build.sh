#!/usr/bin/env bash
# Builds the GPU binaries on a build machine (Rust, no GPU needed) for a GPU machine that has
# its own PyTorch but no Rust toolchain and no package registry, and leaves them, stripped,
# in gpu-bin/ (gitignored) to be carried there with the working tree:
#
#   gpu-bin/muri-trainer        --features torch,cuda            (no MPI: starts anywhere)
#   gpu-bin/muri-trainer-nccl   --features torch,cuda,mpi,nccl   (needs Open MPI's libmpi there)
#   gpu-bin/muri-nccl-bench     --features mpi,nccl              (NCCL all-reduce check)
#   gpu-bin/muri                                                 (`muri profile`)
#
# Usage: scripts/gpu-build.sh [TORCH_VERSION]   (default 2.11.0, the GPU machine's PyTorch)
#
# The trainer must be compiled against the same libtorch version the GPU machine loads at
# run time (C++ symbols differ between versions) and must link libtorch_cuda, so this
# fetches that version's PyTorch wheel from PyPI (~530 MB, --no-deps; only its headers and
# libraries are used), unpacks it under $CARGO_TARGET_DIR/gpu-libtorch and builds with
# LIBTORCH pointing there and LIBTORCH_BYPASS_VERSION_CHECK=1 (tch 0.26 expects 2.13.0). The
# build gets a target dir of its own ($CARGO_TARGET_DIR/gpu), so the CPU build is untouched.
# At run time scripts/gpu-check.sh points the loader at the GPU machine's own torch/lib.
# See docs/testbed.md, "GPU build and check".
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-${MURI_GPU_TORCH:-2.11.0}}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
libtorch_dir="$CARGO_TARGET_DIR/gpu-libtorch/$version"
out=gpu-bin

if [ ! -f "$libtorch_dir/.unpacked" ]; then
  echo "== fetching the torch==$version wheel (headers and libraries to link against)" >&2
  pip=(python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || pip=(.venv-torch/bin/pip)
  mkdir -p "$libtorch_dir"
  "${pip[@]}" download -q --no-deps "torch==$version" -d "$libtorch_dir"
  wheel=$(ls "$libtorch_dir"/torch-"$version"-*.whl | head -1)
  (cd "$libtorch_dir" && unzip -q -o "$wheel" 'torch/include/*' 'torch/lib/*' 'torch/share/*')
  [ -f "$libtorch_dir/torch/lib/libtorch_cuda.so" ] ||
    { echo "error: $wheel has no libtorch_cuda.so (a CPU-only wheel?)" >&2; exit 1; }
  rm -f "$wheel"
  touch "$libtorch_dir/.unpacked"
fi
export LIBTORCH="$libtorch_dir/torch" LIBTORCH_BYPASS_VERSION_CHECK=1
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/gpu"
bin="$CARGO_TARGET_DIR/release"
mkdir -p "$out"

echo "== muri-trainer (torch, cuda) against libtorch $version" >&2
cargo build --release -p muri-workloads --features torch,cuda --bin muri-trainer
cp "$bin/muri-trainer" "$out/muri-trainer"
if command -v mpicc >/dev/null; then
  echo "== muri-trainer-nccl, muri-nccl-bench (torch, cuda, mpi, nccl)" >&2
  cargo build --release -p muri-workloads --features torch,cuda,mpi,nccl \
    --bin muri-trainer --bin muri-nccl-bench
  cp "$bin/muri-trainer" "$out/muri-trainer-nccl"
  cp "$bin/muri-nccl-bench" "$out/muri-nccl-bench"
else
  echo "== Open MPI is not installed here: no NCCL binaries" >&2
fi
echo "== muri" >&2
cargo build --release -p muri --bin muri
cp "$bin/muri" "$out/muri"
strip "$out"/*
echo "$version" > "$out/TORCH_VERSION"
du -ch "$out"/* | tail -1
size=$(du -cb "$out"/* | tail -1 | cut -f1)
if [ "$size" -gt $((60 * 1024 * 1024)) ]; then
  echo "warning: gpu-bin is $((size >> 20)) MiB: too much to carry with the tree (64 MiB)" >&2
fi
echo "gpu-bin ready: carry it (e.g. run's carry: [\"gpu-bin\"]) and run scripts/gpu-check.sh there" >&2
