#!/usr/bin/env bash
# Reruns the figures of BENCHMARKS.md and prints each as a table row of that file
# (what | command | date | machine | value | goal), ready to replace the old row.
#
# Usage: scripts/bench.sh                 the simulator figures (about 5 minutes on 2 cores)
#        scripts/bench.sh NAME…           only those figures, e.g. `scripts/bench.sh all-sweep`
#        scripts/bench.sh --list          the names
# `scale` (100,000 jobs, ~1 minute), `matching` (builds the bench) and `real` (libtorch, ~1 minute)
# run only when named. Traces are read from ../shared/traces/muri-sim.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}"
# MURI=PATH measures that binary instead of building this checkout.
MURI="${MURI:-$CARGO_TARGET_DIR/release/muri}"
SIM=../shared/traces/muri-sim
N8G8=cluster_spec/n8g8.csv
MURI_S=multi-resource-blossom-same-gpu
MURI_L=multi-resource-blossom-same-gpu-unaware

DEFAULT=(sim-srtf sim-muri-s sim-muri-l speed-sweep fig9-sweep all-sweep trace2-memory)
OPTIONAL=(scale matching real)

machine() {
  local mem load
  mem=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)
  load=$(cut -d' ' -f1 /proc/loadavg)
  printf '%s-core %s, %s GiB, load %s' "$(nproc)" "$(uname -m)" "$mem" "$load"
}

# row WHAT NAME VALUE GOAL
row() {
  printf '| %s | `scripts/bench.sh %s` | %s | %s | %s | %s |\n' "$1" "$2" "$(date -u +%F)" "$(machine)" "$3" "$4"
}

# The simulator's own "wall time:" of one run, in seconds.
sim_wall() {
  "$MURI" simulate --trace_file "$1" --cluster_spec "$2" --schedule "$3" | sed -n 's/.*wall time: \([0-9.]*\) s/\1/p'
}

# min–max and median of N runs of sim_wall.
sim_spread() {
  local n=$1
  shift
  for _ in $(seq "$n"); do sim_wall "$@"; done | sort -g |
    awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
           printf "median %.3f s (%.3f–%.3f, %d runs)", m, v[1], v[NR], NR }'
}

# Wall seconds of a sweep, from its last line ("N runs in S s; …").
sweep_wall() {
  local out
  out=$(mktemp -d)
  "$MURI" sweep "$1" --out "$out/run" 2>&1 | sed -n 's/^\([0-9]*\) runs in \([0-9.]*\) s.*/\2 s (\1 runs)/p' | tail -1
  rm -rf "$out"
}

# "S s wall, R MiB peak RSS" of a command (GNU time).
time_rss() {
  /usr/bin/time -f '%e %M' -o /tmp/muri-bench.time "$@" > /dev/null
  awk '{ printf "%.1f s wall, %.0f MiB peak RSS", $1, $2 / 1024 }' /tmp/muri-bench.time
}

bench() {
  case "$1" in
    sim-srtf) row "SRTF, trace1 (1,494 jobs)" "$1" "$(sim_spread 5 $SIM/trace1.csv $N8G8 shortest)" "≤ 0.05 s" ;;
    sim-muri-s) row "Muri-S, trace1" "$1" "$(sim_spread 5 $SIM/trace1.csv $N8G8 $MURI_S)" "≤ 1 s" ;;
    sim-muri-l) row "Muri-L, trace1" "$1" "$(sim_spread 3 $SIM/trace1.csv $N8G8 $MURI_L)" "–" ;;
    speed-sweep)
      row "8 traces × {SRTF, SRSF, Muri-S, Tiresias, Muri-L} (\`experiments/speed.toml\`), every core" \
        "$1" "$(sweep_wall experiments/speed.toml)" "≤ 30 s" ;;
    fig9-sweep) row "Figure 9 sweep (\`experiments/fig9.toml\`)" "$1" "$(sweep_wall experiments/fig9.toml)" "–" ;;
    all-sweep)
      row "Figures 9–13 (\`experiments/all.toml\`)" "$1" "$(sweep_wall experiments/all.toml)" "≤ 2 min" ;;
    trace2-memory)
      row "Muri-S, trace2 (5,755 jobs): time and memory" "$1" \
        "$(time_rss "$MURI" simulate --trace_file $SIM/trace2.csv --cluster_spec $N8G8 --schedule $MURI_S)" "record" ;;
    scale) bench_scale ;;
    matching)
      local ms
      ms=$(cargo bench --quiet -p muri --bench matching 2>/dev/null | awk '$1 == 256 { print $2 " ms float, " $3 " ms 3-decimal" }')
      row "blossom matching, dense 256 nodes, median per solve" "$1" "$ms" "≤ 50 ms" ;;
    real) bench_real ;;
    *)
      echo "unknown figure \`$1\`; known: ${DEFAULT[*]} ${OPTIONAL[*]}" >&2
      exit 2 ;;
  esac
}

# 100,000 generated jobs on 128 nodes × 8 GPUs.
bench_scale() {
  local spec trace p
  spec=$(mktemp --suffix=.csv)
  trace=$(mktemp --suffix=.csv)
  printf 'num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,128,8,92,520\n' > "$spec"
  "$MURI" trace gen --jobs 100000 --seed 1 --interarrival 900 -o "$trace" 2> /dev/null
  for p in shortest $MURI_S; do
    row "100,000 jobs on 1,024 GPUs, \`$p\`" scale \
      "$(time_rss "$MURI" simulate --trace_file "$trace" --cluster_spec "$spec" --schedule $p)" "< 60 s, < 2 GB"
  done
  rm -f "$spec" "$trace"
}

# Interleaving with real models on the CPU (one rank; see BENCHMARKS.md, "Real training").
bench_real() {
  . scripts/torch-env.sh
  cargo build --release --quiet -p muri -p muri-workloads --features "$MURI_FEATURES"
  "$MURI" data gen --dir data > /dev/null
  for pair in "resnet18:32 gpt2:8" "shufflenet_v2_x1_0:32 bert:8" "resnet18:32 vgg16:16"; do
    set -- $pair
    echo "## ${1} + ${2}"
    for _ in 1 2 3; do
      "$MURI" profile --model "${1%%:*}" --batch "${1##*:}" --with "$2" --iterations 40 --warmup 5
    done
  done
}

if [ "${1:-}" = --list ]; then
  printf '%s\n' "${DEFAULT[@]}" "${OPTIONAL[@]}"
  exit 0
fi
[ "${1:-}" = real ] || [ "$MURI" != "$CARGO_TARGET_DIR/release/muri" ] || cargo build --release --quiet -p muri
echo '| what | command | date | machine | value | goal |'
echo '|---|---|---|---|---|---|'
if [ $# -eq 0 ]; then set -- "${DEFAULT[@]}"; fi
for name in "$@"; do bench "$name"; done
