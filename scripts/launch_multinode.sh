#!/usr/bin/env bash
# Launches `introspect train` on every host of an MPI hostfile, RANKS_PER_NODE ranks on each (one per GPU).
#
#   scripts/launch_multinode.sh HOSTFILE RANKS_PER_NODE CONFIG.yaml [--resume auto] [key=value ...]
#
# HOSTFILE is OpenMPI's format, one host per line with its slots:
#   node01 slots=8
#   node02 slots=8
# Every host needs the same build at the same path (INTROSPECT_BIN, default build/bin/introspect of this checkout)
# and a run folder they all see (a shared filesystem): rank 0 writes the logs, metrics and weights, and every
# rank adds its optimizer shard to each checkpoint.
#
# Environment passed to every rank: PATH, LD_LIBRARY_PATH, OMP_NUM_THREADS and every NCCL_* variable set here.
# MPI_IFACE (e.g. eth0) pins MPI's TCP traffic to one interface when hosts have several.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
hostfile=$1 ranks_per_node=$2 config=$3
shift 3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${INTROSPECT_BIN:-$root/build/bin/introspect}
[[ -f "$hostfile" ]] || { echo "launch_multinode.sh: no hostfile $hostfile" >&2; exit 2; }
[[ -x "$bin" ]] || { echo "launch_multinode.sh: no binary $bin (build first, or set INTROSPECT_BIN)" >&2; exit 2; }
nodes=$(grep -cvE '^[[:space:]]*(#|$)' "$hostfile")
(( nodes > 0 )) || { echo "launch_multinode.sh: $hostfile lists no host" >&2; exit 2; }

forward=(-x PATH -x LD_LIBRARY_PATH)
[[ -n "${OMP_NUM_THREADS:-}" ]] && forward+=(-x OMP_NUM_THREADS)
while IFS='=' read -r name _; do forward+=(-x "$name"); done < <(env | grep -E '^NCCL_' || true)
mca=()
[[ -n "${MPI_IFACE:-}" ]] && mca+=(--mca btl_tcp_if_include "$MPI_IFACE" --mca oob_tcp_if_include "$MPI_IFACE")

set -x
exec mpirun --hostfile "$hostfile" -np $((nodes * ranks_per_node)) --map-by "ppr:${ranks_per_node}:node" \
  --bind-to none "${forward[@]}" "${mca[@]}" "$bin" train --config "$config" "$@"
