#!/usr/bin/env bash
# Builds the GPU binaries on a build machine (Rust, no GPU needed) for a GPU machine that has
# its own PyTorch but no Rust toolchain and no package registry, and leaves them, stripped,
# in gpu-bin/ (gitignored) to be carried there with the working tree:
#
#   gpu-bin/muri-trainer        --features torch,cuda            (no MPI: starts anywhere)
#   gpu-bin/muri-trainer-nccl   --features torch,cuda,mpi,nccl   (needs Open MPI's libmpi there)
#   gpu-bin/muri-nccl-bench     --features mpi,nccl              (NCCL all-reduce check)
#   gpu-bin/muri                                                 (`muri profile`)
#   gpu-bin/TORCH_VERSION, gpu-bin/BUILD_INFO                    (what it was built from)
#
# Usage: scripts/gpu-build.sh [TORCH_VERSION]   (default 2.11.0, the GPU machine's PyTorch)
#
# The trainer must be compiled against the libtorch version the GPU machine loads at run time
# (C++ symbols differ between versions), with the tch release made for it: 2.11.0 builds
# gpu/Cargo.toml (tch 0.24, the workloads sources), 2.13.0 the root workspace (tch 0.26).
# libtorch comes from that version's PyPI wheel installed without its CUDA dependencies into
# a venv outside the repo ($MURI_GPU_VENV, default ~/.cache/muri-rs/torch-VERSION; 530 MB
# download, 1.4 GB on disk): torch plus the two small CUDA wheels libtorch_cpu.so needs to
# load (cudart, cupti), so the built trainer also runs here on the CPU. The build gets a target
# dir of its own ($CARGO_TARGET_DIR/gpu), so the CPU build is untouched. At run time
# scripts/gpu-check.sh points the loader at the GPU machine's own torch/lib.
# See docs/testbed.md, "GPU build and check".
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-${MURI_GPU_TORCH:-2.11.0}}"
case "$version" in
  2.11.0) manifest=gpu/Cargo.toml ;;
  2.13.0) manifest=Cargo.toml ;;
  *)
    echo "error: no tch release for libtorch $version in this repo: gpu/Cargo.toml builds against" \
      "2.11.0 (tch 0.24), the root workspace against 2.13.0 (tch 0.26)" >&2
    exit 2
    ;;
esac
root_target="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}"
venv="${MURI_GPU_VENV:-$HOME/.cache/muri-rs/torch-$version}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
out=gpu-bin

# The [features] and [dependencies] tables of a manifest, comments and the tch line left out.
manifest_tables() {
  awk '/^\[/ { keep = ($0 == "[features]" || $0 == "[dependencies]") }
       keep && !/^[[:space:]]*(#|$)/ && !/^tch = / { print }' "$1"
}
if [ "$manifest" = gpu/Cargo.toml ] &&
  ! diff <(manifest_tables workloads/Cargo.toml) <(manifest_tables gpu/Cargo.toml) >&2; then
  echo "error: gpu/Cargo.toml's [features] or [dependencies] differ from workloads/Cargo.toml's" \
    "(lines above: < workloads, > gpu); make them equal except for the tch version" >&2
  exit 1
fi

# ---- libtorch $version from its PyPI wheel, in a venv outside the repo --------------------
torch_dir() { ls -d "$venv"/lib/python3*/site-packages/torch 2>/dev/null | head -1; }
if [ -z "$(torch_dir)" ] || [ ! -f "$(torch_dir)/lib/libtorch_cuda.so" ]; then
  echo "== installing torch==$version (no CUDA dependencies) into $venv" >&2
  python=$(command -v python3.11 || command -v python3)
  "$python" -m venv "$venv"
  # cudart and cupti: the CUDA 13.0 runtime pins of torch 2.11 and 2.13 (cuda-toolkit 13.0.2).
  "$venv/bin/pip" install -q --no-deps "torch==$version" \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
fi
torch=$(torch_dir)
[ -f "$torch/lib/libtorch_cuda.so" ] ||
  { echo "error: $torch/lib has no libtorch_cuda.so (a CPU-only torch?); remove $venv" >&2; exit 1; }
found=$(sed -n "s/^__version__ = '\([^'+]*\).*/\1/p" "$torch/version.py")
[ "$found" = "$version" ] ||
  { echo "error: $torch/version.py says torch $found, expected $version; remove $venv" >&2; exit 1; }
missing=$(ldd "$torch/lib/libtorch_cpu.so" | grep 'not found' || true)
[ -z "$missing" ] ||
  { echo "error: libtorch_cpu.so cannot load here: $missing" >&2; exit 1; }

# LIBTORCH, not LIBTORCH_USE_PYTORCH: the latter imports torch, which loads cuDNN, cuBLAS,
# NCCL, … (another 3 GB of wheels) only to print paths LIBTORCH gives directly; the wheel's
# build uses the C++11 ABI, torch-sys' default. torch-sys checks the version only against a
# libtorch zip's build-version file, which a wheel lacks: the check above stands in for it.
export LIBTORCH="$torch"
unset LIBTORCH_USE_PYTORCH LIBTORCH_BYPASS_VERSION_CHECK LIBTORCH_INCLUDE LIBTORCH_LIB
bin="$root_target/gpu/release"
mkdir -p "$out"
rm -f "$out"/muri-trainer "$out"/muri-trainer-nccl "$out"/muri-nccl-bench "$out"/muri

echo "== muri-trainer (torch, cuda) against libtorch $version ($manifest)" >&2
CARGO_TARGET_DIR="$root_target/gpu" cargo build --release --manifest-path "$manifest" \
  -p muri-workloads --features torch,cuda --bin muri-trainer
cp "$bin/muri-trainer" "$out/muri-trainer"
if command -v mpicc >/dev/null; then
  echo "== muri-trainer-nccl, muri-nccl-bench (torch, cuda, mpi, nccl)" >&2
  CARGO_TARGET_DIR="$root_target/gpu" cargo build --release --manifest-path "$manifest" \
    -p muri-workloads --features torch,cuda,mpi,nccl --bin muri-trainer --bin muri-nccl-bench
  cp "$bin/muri-trainer" "$out/muri-trainer-nccl"
  cp "$bin/muri-nccl-bench" "$out/muri-nccl-bench"
else
  echo "== Open MPI is not installed here: no NCCL binaries" >&2
fi
# `muri` links no libtorch: the root workspace's ordinary release build.
echo "== muri" >&2
(unset LIBTORCH && CARGO_TARGET_DIR="$root_target" cargo build --release -p muri --bin muri)
cp "$root_target/release/muri" "$out/muri"
strip "$out"/muri*
echo "$version" >"$out/TORCH_VERSION"
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo -dirty)" \
  "built $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$out/BUILD_INFO"
ls -l "$out" >&2
size=$(du -cb "$out"/* | tail -1 | cut -f1)
echo "gpu-bin: $((size >> 20)) MiB; scripts/gpu-carry.sh checks it fits the carry limit and prints the run" >&2
