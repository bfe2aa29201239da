#!/usr/bin/env bash
# Prepares the GPU check for a lent GPU machine (the device runner copies the working tree
# and the carried paths, 64 MiB in all): brings gpu-bin/ up to date with the tree
# (scripts/gpu-build.sh, a no-op when nothing changed), checks that the tree and gpu-bin/
# fit the carry limit, and prints the exact run to ask for.
#
# Usage: scripts/gpu-carry.sh [TORCH_VERSION]   (default 2.11.0; as scripts/gpu-build.sh)
#   MURI_GPU_CHECK_BUDGET_S: the check's own budget (default 420 s); the run's timeout adds
#   60 s for start-up, data generation and the last step's tail.
# See docs/testbed.md, "GPU build and check".
set -euo pipefail
cd "$(dirname "$0")/.."
limit_mib=64
budget_s="${MURI_GPU_CHECK_BUDGET_S:-420}"

scripts/gpu-build.sh "$@"

# What travels: tracked files and untracked ones git does not ignore, plus gpu-bin/.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard |
  xargs -0 stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
bin_bytes=$(du -cb gpu-bin | tail -1 | cut -f1)
total=$((tree_bytes + bin_bytes))
printf 'carry: working tree %d MiB + gpu-bin %d MiB = %d MiB of %d MiB\n' \
  $((tree_bytes >> 20)) $((bin_bytes >> 20)) $((total >> 20)) "$limit_mib"
if [ "$total" -gt $((limit_mib << 20)) ]; then
  echo "error: too much to carry; the largest files:" >&2
  { git ls-files -z --cached --others --exclude-standard | xargs -0 du -b --; du -b gpu-bin/*; } |
    sort -rn | head -8 >&2
  exit 1
fi
echo "gpu-bin: $(cat gpu-bin/BUILD_INFO), libtorch $(cat gpu-bin/TORCH_VERSION)"
echo "device run (results come back as \$OUT/gpu-check.txt):"
echo "  run(command=\"MURI_GPU_CHECK_BUDGET_S=$budget_s scripts/gpu-check.sh\", carry=[\"gpu-bin\"], timeout_s=$((budget_s + 60)))"
