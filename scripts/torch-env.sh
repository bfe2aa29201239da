#!/usr/bin/env bash
# Source me: `. scripts/torch-env.sh`. Makes sure libtorch 2.13.0 (the version tch 0.26 needs,
# CPU-only "slim" install: ~0.5 GB download, 1.2 GB on disk) sits in the project-local venv
# .venv-torch, then exports LIBTORCH for the torch-sys build and LD_LIBRARY_PATH for running.
# Idempotent; the first call takes ~30 s. See docs/dependencies.md §3 in ../shared.
_muri_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_muri_venv="$_muri_root/.venv-torch"
LIBTORCH=$(ls -d "$_muri_venv"/lib/python3*/site-packages/torch 2>/dev/null | head -1 || true)
if [ -z "$LIBTORCH" ] || [ ! -f "$LIBTORCH/lib/libtorch_cpu.so" ]; then
  echo "== installing libtorch 2.13.0 (CPU, slim) into .venv-torch" >&2
  _py=$(command -v python3.11 || command -v python3)
  "$_py" -m venv "$_muri_venv" >&2 &&
    "$_muri_venv/bin/pip" install -q --no-deps torch==2.13.0 \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 >&2 ||
    { echo "error: pip could not install torch==2.13.0 into $_muri_venv" >&2; return 1 2>/dev/null || exit 1; }
  LIBTORCH=$(ls -d "$_muri_venv"/lib/python3*/site-packages/torch | head -1)
fi
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The feature set every script builds with (one shared build): torch and cuda (GPU placement;
# cudarc loads CUDA at run time, so it builds and runs on the CPU anywhere), plus MPI and NCCL
# where Open MPI is installed.
MURI_FEATURES=muri/torch,muri-workloads/torch,muri-workloads/cuda
if command -v mpirun >/dev/null && command -v mpicc >/dev/null; then
  MURI_FEATURES=$MURI_FEATURES,muri/mpi,muri-workloads/mpi,muri-workloads/nccl
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export MURI_FEATURES
unset _muri_root _muri_venv _py
