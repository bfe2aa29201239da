#!/bin/sh
# Open MPI's launch agent (`--mca plm_rsh_agent`) for hosts that are loopback addresses of
# this machine (127.0.0.2, 127.0.0.3, ...: one per `muri worker`, see docs/testbed.md).
# mpirun calls it as ssh would be called, `AGENT [OPTIONS] HOST COMMAND...`, to start its
# daemon (orted) on HOST; for a loopback HOST "remote" is this machine, so the command runs
# here. Any other host is refused: a real cluster uses ssh (Open MPI's default agent).
while [ $# -gt 0 ]; do
  case $1 in
    -*) shift ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  echo "loopback-launch-agent: usage: $0 [OPTIONS] HOST COMMAND..." >&2
  exit 255
fi
host=$1
shift
case $host in
  127.*) ;;
  *)
    echo "loopback-launch-agent: $host is not a loopback address; launch on real hosts with ssh" >&2
    exit 255
    ;;
esac
# The host this daemon stands in for, for the ranks' logs.
MURI_HOST=$host
export MURI_HOST
# Each daemon keeps its own Open MPI session directory, as a real host has its own /tmp:
# daemons on one machine would otherwise race to create the same one. Named after the host
# and the launching mpirun ($PPID); the worker removes it when that mpirun has exited.
OMPI_MCA_orte_tmpdir_base=${TMPDIR:-/tmp}/muri-loopback-hosts/$host-$PPID
export OMPI_MCA_orte_tmpdir_base
mkdir -p "$OMPI_MCA_orte_tmpdir_base" || exit 255
# The daemon replaces this process, so mpirun is its parent; it gets SIGTERM (and then ends
# its ranks) the moment mpirun dies, as a real node's daemon loses its ssh session.
if command -v setpriv >/dev/null 2>&1; then
  exec /bin/sh -c "exec setpriv --pdeathsig TERM $*"
fi
exec /bin/sh -c "exec $*"
