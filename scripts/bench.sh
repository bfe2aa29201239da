#!/usr/bin/env bash
# Produces the figures in BENCHMARKS.md (release build, this machine). Reads ../shared traces.
# Usage: scripts/bench.sh            (simulator + scale)   |   scripts/bench.sh scale   (only the 100k-job run)
#        scripts/bench.sh real       (real tch training: solo profiles and interleaved pairs, ~1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}"
[ "${1:-all}" = real ] || cargo build --release --quiet -p muri
MURI="$CARGO_TARGET_DIR/release/muri"
SIM=../shared/traces/muri-sim
N8G8=cluster_spec/n8g8.csv
what="${1:-all}"

# Wall seconds and peak RSS of a command (GNU time; `apt-get install time` if missing).
measure() {
  /usr/bin/time -f '%e s wall, peak RSS %M KiB' "$@" > /tmp/muri-bench.out
}

if [ "$what" = all ]; then
  echo "## Muri-S on trace1 (1,494 jobs)"
  for i in 1 2 3; do measure "$MURI" simulate --trace_file $SIM/trace1.csv --cluster_spec $N8G8 --schedule multi-resource-blossom-same-gpu; done
  grep -E 'Total|wall' /tmp/muri-bench.out
  echo "## SRTF on trace1"
  for i in 1 2 3; do measure "$MURI" simulate --trace_file $SIM/trace1.csv --cluster_spec $N8G8 --schedule shortest; done
  grep -E 'wall' /tmp/muri-bench.out
  echo "## 8 traces x {SRTF, SRSF, Muri-S, Tiresias, Muri-L}"
  start=$(date +%s.%N)
  for t in trace1 trace2 trace3 trace4 trace1_pr trace2_pr trace3_pr trace4_pr; do
    "$MURI" simulate --trace_file $SIM/$t.csv --cluster_spec $N8G8 \
      --schedule shortest,shortest-gpu,multi-resource-blossom-same-gpu,dlas-gpu,multi-resource-blossom-same-gpu-unaware > /dev/null
  done
  end=$(date +%s.%N)
  printf 'total %.2f s (one after another)\n' "$(echo "$end - $start" | bc)"
  echo "## the same 40 runs as one sweep on every core, then the paper's whole evaluation"
  out=$(mktemp -d)
  "$MURI" sweep experiments/speed.toml --out "$out/speed" 2>&1 | tail -1
  "$MURI" sweep experiments/all.toml --out "$out/all" 2>&1 | tail -1
  rm -rf "$out"
  echo "## Muri-S on trace2 (5,755 jobs): time and peak memory"
  measure "$MURI" simulate --trace_file $SIM/trace2.csv --cluster_spec $N8G8 --schedule multi-resource-blossom-same-gpu
  echo "## matching (dense graphs)"
  cargo bench --quiet -p muri --bench matching 2>/dev/null | grep -v '^$' || true
fi

if [ "$what" = all ] || [ "$what" = scale ]; then
  echo "## scale: 100,000 jobs on 1,024 GPUs (128 nodes x 8)"
  spec=$(mktemp --suffix=.csv); trace=$(mktemp --suffix=.csv)
  printf 'num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,128,8,92,520\n' > "$spec"
  "$MURI" trace gen --jobs 100000 --seed 1 --interarrival 900 -o "$trace" 2>/dev/null
  for p in shortest multi-resource-blossom-same-gpu; do
    echo "### $p"
    measure "$MURI" simulate --trace_file "$trace" --cluster_spec "$spec" --schedule $p
    grep -E 'Total|wall' /tmp/muri-bench.out
  done
  rm -f "$spec" "$trace"
fi

if [ "$what" = real ]; then
  # Interleaving with real models on this CPU: one rank, libtorch limited to 1 thread for the
  # compute stage, the data stage on its own thread (the other core), all-reduce + step on the
  # main thread (one rank, so no network: the stage is the optimiser step).
  . scripts/torch-env.sh
  cargo build --release --quiet -p muri -p muri-workloads --features "$MURI_FEATURES"
  "$MURI" data gen --dir data > /dev/null
  for pair in "resnet18:32 gpt2:8" "shufflenet_v2_x1_0:32 bert:8" "resnet18:32 vgg16:16"; do
    set -- $pair
    for i in 1 2 3; do
      echo "## ${1} + ${2} (run $i)"
      "$MURI" profile --model "${1%%:*}" --batch "${1##*:}" --with "$2" --iterations 40 --warmup 5
    done
  done
fi
