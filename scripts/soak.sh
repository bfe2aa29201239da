#!/usr/bin/env bash
# scripts/soak.sh [--workers N] [--gpus G] [--jobs J] [--every S] [--policy P] [--out DIR]
#
# A soak of the testbed under faults: a scheduler and N worker daemons of G GPUs on loopback
# hosts (worker n on 127.0.0.<n+2>), a generated trace of J jobs (`muri trace gen`),
# emulated, fast-forward. Every ~S seconds (random 0.5–1.5 × S) one random worker is either
# SIGKILLed and restarted, or SIGSTOPped for 1–4 s and resumed with SIGCONT. When the
# scheduler supports `--state_dir`, it is also SIGKILLed once (a third into the run) and
# restarted on the same state directory.
#
# At the end it checks: jobs lost 0 (every trace job has exactly one job.csv row, or is
# listed in failed.csv), duplicates 0, failed 0, and nothing of the run left running. Exit
# status 0 only when every check passes. Defaults: 16 workers × 8 GPUs, 300 jobs, S = 30.
#
# Environment: MURI (a built `muri`, else it is built), TIME_SCALE (0.02), FAST_FORWARD (10),
# SEED (7), PORT (19112).
set -euo pipefail
cd "$(dirname "$0")/.."

workers=16 gpus=8 jobs=300 every=30 policy=multi-resource-blossom-same-gpu out=results/soak
while [ $# -gt 0 ]; do
  case $1 in
    --workers) workers=$2; shift 2 ;;
    --gpus) gpus=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --every) every=$2; shift 2 ;;
    --policy) policy=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
  esac
done
[ "$workers" -ge 2 ] && [ "$workers" -le 200 ] || { echo "--workers must be 2..200" >&2; exit 2; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}"
if [ -z "${MURI:-}" ]; then
  cargo build --release -q -p muri -p muri-workloads
  MURI=$CARGO_TARGET_DIR/release/muri
fi
rm -rf "$out"
mkdir -p "$out"
umask 077
spec=$out/cluster_spec.csv
printf 'num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,%s,%s,%s,350\n' \
  "$workers" "$gpus" "$((gpus * 8))" > "$spec"
max_gpus=$((gpus * 2 < 8 ? gpus * 2 : 8))
mix="1:0.4,2:0.2,4:0.2"
[ "$max_gpus" -ge 8 ] && mix+=",8:0.2"
"$MURI" trace gen --jobs "$jobs" --interarrival 600 --median-hours 1 --duration-sigma 1.5 \
  --gpu-mix "$mix" --seed "${SEED:-7}" -o "$out/trace.csv"

export MURI_TOKEN="soak-$$-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
port=${PORT:-19112}
state_flags=()
if "$MURI" scheduler --help 2>/dev/null | grep -q -- '--state_dir'; then
  state_flags=(--state_dir "$out/state")
fi

sched_pid=
start_scheduler() {
  "$MURI" scheduler --schedule "$policy" --trace_file "$out/trace.csv" --cluster_spec "$spec" \
    --log_path "$out" --listen "127.0.0.1:$port" --workers "$workers" \
    --schedule_interval 3600 --fast_forwarding "${FAST_FORWARD:-10}" \
    --time_scale "${TIME_SCALE:-0.02}" "${state_flags[@]}" 2>> "$out/scheduler.log" &
  sched_pid=$!
}
declare -a worker_pid
start_worker() {
  local n=$1
  "$MURI" worker --scheduler "127.0.0.1:$port" --node-id "$n" --gpus "$gpus" \
    --listen "127.0.0.$((n + 2)):0" --kill_grace 1 2>> "$out/worker-$n.log" &
  worker_pid[n]=$!
}
cleanup() {
  kill -KILL "$sched_pid" "${worker_pid[@]}" 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

start_scheduler
for ((n = 0; n < workers; n++)); do start_worker "$n"; done
echo "soak: $workers workers × $gpus GPUs, $jobs jobs, a fault every ~${every}s; logs in $out" >&2

started=$SECONDS
restarted_scheduler=0 kills=0 pauses=0
next_fault=$((SECONDS + every / 2 + RANDOM % every))
while kill -0 "$sched_pid" 2>/dev/null; do
  sleep 1
  kill -0 "$sched_pid" 2>/dev/null || break   # done: its workers exit on its Exit
  # Restart a worker that exited by itself (after a scheduler restart or a refusal).
  for ((n = 0; n < workers; n++)); do
    kill -0 "${worker_pid[n]}" 2>/dev/null || { echo "$(date +%T) worker $n gone: restarting" >> "$out/faults.log"; start_worker "$n"; }
  done
  if [ ${#state_flags[@]} -gt 0 ] && [ "$restarted_scheduler" = 0 ] && [ $((SECONDS - started)) -ge $((every * 3)) ]; then
    echo "$(date +%T) scheduler SIGKILL + restart" >> "$out/faults.log"
    kill -KILL "$sched_pid"; wait "$sched_pid" 2>/dev/null || true
    start_scheduler
    restarted_scheduler=1
    continue
  fi
  [ "$SECONDS" -ge "$next_fault" ] || continue
  next_fault=$((SECONDS + every / 2 + RANDOM % every))
  n=$((RANDOM % workers))
  if [ $((RANDOM % 2)) = 0 ]; then
    echo "$(date +%T) worker $n SIGKILL + restart" >> "$out/faults.log"
    kill -KILL "${worker_pid[n]}" 2>/dev/null || true
    wait "${worker_pid[n]}" 2>/dev/null || true
    start_worker "$n"
    kills=$((kills + 1))
  else
    pause=$((1 + RANDOM % 4))
    echo "$(date +%T) worker $n SIGSTOP for ${pause}s" >> "$out/faults.log"
    kill -STOP "${worker_pid[n]}" 2>/dev/null || true
    sleep "$pause"
    kill -CONT "${worker_pid[n]}" 2>/dev/null || true
    pauses=$((pauses + 1))
  fi
done
status=0
wait "$sched_pid" || status=$?
wall=$((SECONDS - started))
# Processes of this run (scheduler, workers, mpirun, trainers): muri or MPI programs whose
# environment holds the run's token.
run_processes() {
  local count=0 pid cmd list=${1:-}
  for pid in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null < "$pid/cmdline") 2>/dev/null || continue
    case $cmd in *muri*|*mpirun*|*prted*|*orted*) ;; *) continue ;; esac
    tr '\0' '\n' 2>/dev/null < "$pid/environ" | grep -qx "MURI_TOKEN=$MURI_TOKEN" || continue
    count=$((count + 1))
    [ -n "$list" ] && echo "left running: ${pid#/proc/} $cmd" >> "$out/soak.out"
  done
  echo "$count"
}
# The workers exit on the scheduler's Exit, their trainers with them.
for _ in $(seq 20); do [ "$(run_processes)" = 0 ] && break; sleep 0.5; done
left=$(run_processes list)
cleanup

# ---- checks ----------------------------------------------------------------------------
col() { head -1 "$1" | tr ',' '\n' | grep -nx "$2" | cut -d: -f1; }
trace_ids=$(tail -n +2 "$out/trace.csv" | cut -d, -f"$(col "$out/trace.csv" job_id)" | sort -n)
done_ids=$(tail -n +2 "$out/job.csv" 2>/dev/null | cut -d, -f"$(col "$out/job.csv" job_id)" | sort -n)
failed_ids=$(tail -n +2 "$out/failed.csv" 2>/dev/null | cut -d, -f1 | sort -n)
duplicates=$(uniq -d <<< "$done_ids" | grep -c . || true)
lost=$(comm -23 <(sort -u <<< "$trace_ids") <(sort -u <<< "$done_ids"$'\n'"$failed_ids") | grep -c . || true)
failed=$(grep -c . <<< "$failed_ids" || true)
echo "soak: scheduler exit $status, ${wall}s wall, $kills worker kills, $pauses pauses, scheduler restarts $restarted_scheduler" | tee -a "$out/soak.out"
echo "soak: jobs $(grep -c . <<< "$trace_ids"), completed $(grep -c . <<< "$done_ids"), lost $lost, duplicates $duplicates, failed $failed, processes left $left" | tee -a "$out/soak.out"
[ "$status" = 0 ] && [ "$lost" = 0 ] && [ "$duplicates" = 0 ] && [ "$failed" = 0 ] && [ "$left" = 0 ]
