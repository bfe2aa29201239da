#!/usr/bin/env bash
# run.sh <policy> [--workers N] [--gpus-per-worker G] [--trace F] [--cluster_spec F] [--hosts loopback]
#
# Runs one policy on the testbed on this machine: a scheduler and N worker daemons on
# 127.0.0.1 (emulated GPUs, fast-forward mode), waits for every job, stops everything (also on
# Ctrl-C), then writes `muri calc` of the logs to results/<policy>/result.out and prints it.
# Every launch is a row of results/<policy>/launches.csv; trainer output goes to
# results/<policy>/trainer-logs/launch-<id>.log.
#
# --hosts loopback: each worker stands in for a host, binding and advertising its own
# loopback address (worker n on 127.0.0.<n+2>), so a job placed on several nodes runs its
# ranks on several hosts. With Open MPI installed the build has the `mpi` features and the
# head worker's `mpirun` starts the other hosts' ranks through scripts/loopback-launch-agent.sh.
#
# The default trace, trace-data/testbed.csv (16 jobs, ≤ 4 GPUs each), was made with:
#   muri trace gen --jobs 16 --interarrival 600 --median-hours 1 --duration-sigma 1.0 \
#     --gpu-mix 1:0.5,2:0.25,4:0.25 --seed 4 -o trace-data/testbed.csv
# trace-data/testbed-multinode.csv (14 jobs, three of them 8 GPUs: for 3 workers x 4 GPUs):
#   muri trace gen --jobs 14 --interarrival 600 --median-hours 1 --duration-sigma 1.0 \
#     --gpu-mix 1:0.35,2:0.2,4:0.2,8:0.25 --seed 5 -o trace-data/testbed-multinode.csv
# Extra knobs (environment): TIME_SCALE (0.05), FAST_FORWARD (20), INTERVAL (3600 virtual s),
# PORT (19012), MURI_TOKEN (random if unset), MURI (the muri binary; built if unset),
# CONCURRENT_SAMPLES (1: every worker runs on this machine, so fast-forward samples run one
# at a time, after all of the round's launches have started, and do not slow each other
# down; 0 runs them all at once, as on a cluster).
# FAST_FORWARD=0 runs in real time: every iteration runs, the virtual clock is wall time ÷
# TIME_SCALE, which then defaults to 0.004 for emulated stages (testbed.csv's 33,561 virtual
# seconds take about 2.5 minutes) and to 1 for real models.
# EXECUTOR=model completes launches with the simulator's progress model instead of trainers
# (workers still register); its results/<policy>/decisions.csv then equals the decision log of
# `muri simulate --decisions` on the same trace and cluster (`muri diff` compares them). Every
# run writes that log.
#
# TLS=1 runs every connection over TLS: a throwaway CA and certificate for 127.0.0.1 are
# made with `muri tls gen` in results/<policy>/tls (the CA key is not kept), the daemons get
# --tls_cert/--tls_key/--tls_ca and the workers dial https://. Logs are created mode 0600.
#
# WORKLOAD=real trains real tch models instead of emulating stages (CNN / transformer LM /
# DQN on synthetic data in data/, checkpoints in results/<policy>/ckpt): it installs libtorch
# into .venv-torch (scripts/torch-env.sh), builds with `--features torch`, and defaults to
# trace-data/testbed-real.csv (6 short jobs), TIME_SCALE=1 and FAST_FORWARD=5. That trace:
#   muri trace gen --jobs 6 --interarrival 900 --median-hours 0.5 --duration-sigma 0.5 \
#     --gpu-mix 1:0.5,2:0.5 --seed 3 -o trace-data/testbed-real.csv
# trace-data/testbed-real-multinode.csv (4 short jobs, two of 2 GPUs: on 2 workers x 1 GPU
# with --hosts loopback their ranks span two hosts):
#   muri trace gen --jobs 4 --interarrival 900 --median-hours 0.25 --duration-sigma 0.5 \
#     --gpu-mix 1:0.5,2:0.5 --seed 3 -o trace-data/testbed-real-multinode.csv
# CHECK_SYNC=1 has the trainers check after every step that all ranks of a job hold the same
# parameters (`muri worker --check_sync`); rank 0 logs `check-sync: N parameter checks
# passed` in results/<policy>/trainer-logs/launch-<id>.log.
set -euo pipefail
cd "$(dirname "$0")"

usage() { sed -n '2,2p' "$0" | sed 's/^# //' >&2; exit 2; }
[ $# -ge 1 ] || usage
policy=$1; shift
workload=${WORKLOAD:-emulated}
case $workload in
  emulated) trace=trace-data/testbed.csv ;;
  real) trace=trace-data/testbed-real.csv; TIME_SCALE=${TIME_SCALE:-1}; FAST_FORWARD=${FAST_FORWARD:-5} ;;
  *) echo "WORKLOAD must be emulated or real" >&2; exit 2 ;;
esac
[ "${FAST_FORWARD:-}" = 0 ] && TIME_SCALE=${TIME_SCALE:-0.004}
workers=2 gpus=4 spec="" hosts=local
while [ $# -gt 0 ]; do
  case $1 in
    --workers) workers=$2; shift 2 ;;
    --gpus-per-worker) gpus=$2; shift 2 ;;
    --trace) trace=$2; shift 2 ;;
    --cluster_spec|--cluster-spec) spec=$2; shift 2 ;;
    --hosts)
      case $2 in
        local|loopback) hosts=$2 ;;
        *) echo "--hosts must be local or loopback" >&2; exit 2 ;;
      esac
      shift 2 ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/muri-rs/target}"
features=()
worker_flags=()
out=results/$policy
mkdir -p "$out"
if [ "$workload" = real ]; then
  . scripts/torch-env.sh
  features=(--features "$MURI_FEATURES")   # the same build as `make test`
  worker_flags=(--workload real --data_dir data --checkpoint_dir "$out/ckpt")
  rm -rf "$out/ckpt"
fi
if [ "$hosts" = loopback ] && command -v mpirun >/dev/null; then
  mpi_features=muri/mpi,muri-workloads/mpi,muri-workloads/nccl   # as scripts/test.sh
  if [ ${#features[@]} -gt 0 ]; then
    case ${features[1]} in *mpi*) ;; *) features[1]=${features[1]},$mpi_features ;; esac
  else
    features=(--features "$mpi_features")
  fi
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
rm -rf "$out/trainer-logs"
# The scheduler's journal: a run started on a STATE_DIR holding one resumes it (RESUME=1 keeps
# the default one; otherwise each run starts afresh).
state=${STATE_DIR:-$out/state}
[ -n "${STATE_DIR:-}" ] || [ "${RESUME:-0}" = 1 ] || rm -rf "$state"
state_flags=(--state_dir "$state")
[ "${CHECK_SYNC:-0}" = 1 ] && worker_flags+=(--check_sync)
if [ -z "${MURI:-}" ]; then
  cargo build --release -q -p muri -p muri-workloads "${features[@]}"
  MURI=$CARGO_TARGET_DIR/release/muri
fi
if [ -z "$spec" ]; then
  spec=$out/cluster_spec.csv
  printf 'num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,%s,%s,%s,350\n' \
    "$workers" "$gpus" "$((gpus * 8))" > "$spec"
fi
umask 077   # from here on (after the build): logs, job.csv and keys readable by this user only
export MURI_TOKEN="${MURI_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"
port=${PORT:-19012}
tls_flags=()
scheduler_addr=127.0.0.1:$port
if [ "${TLS:-0}" = 1 ]; then
  sans=127.0.0.1,localhost   # and every --hosts loopback worker's own address
  for ((n = 0; n < workers; n++)); do sans+=,127.0.0.$((n + 2)); done
  "$MURI" tls gen --dir "$out/tls" --san "$sans"
  tls_flags=(--tls_cert "$out/tls/node.pem" --tls_key "$out/tls/node.key" --tls_ca "$out/tls/ca.pem")
  scheduler_addr=https://127.0.0.1:$port
fi
pids=()
cleanup() {
  # Every daemon runs in its own process group (set -m): kill the groups, trainers included.
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 0.3
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM
set -m
"$MURI" scheduler --schedule "$policy" --trace_file "$trace" --cluster_spec "$spec" \
  --log_path "$out" --listen "127.0.0.1:$port" --workers "$workers" \
  --schedule_interval "${INTERVAL:-3600}" --fast_forwarding "${FAST_FORWARD:-20}" \
  --concurrent_samples "${CONCURRENT_SAMPLES:-1}" \
  --time_scale "${TIME_SCALE:-0.05}" --executor "${EXECUTOR:-trainers}" \
  --decisions "$out/decisions.csv" "${state_flags[@]}" "${tls_flags[@]}" 2> "$out/scheduler.log" &
sched=$!; pids+=("$sched")
for ((n = 0; n < workers; n++)); do
  listen=127.0.0.1:0
  [ "$hosts" = loopback ] && listen=127.0.0.$((n + 2)):0
  "$MURI" worker --scheduler "$scheduler_addr" --node-id "$n" --gpus "$gpus" --listen "$listen" \
    "${worker_flags[@]}" "${tls_flags[@]}" 2> "$out/worker-$n.log" &
  pids+=("$!")
done
set +m
wait "$sched" || { echo "scheduler failed; see $out/scheduler.log" >&2; tail -5 "$out/scheduler.log" >&2; exit 1; }
tail -1 "$out/scheduler.log" >&2
"$MURI" calc "$out" | tee "$out/result.out"
