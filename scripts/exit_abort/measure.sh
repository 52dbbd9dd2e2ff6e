#!/usr/bin/env bash
# Runs a command N times and counts glibc heap aborts (docs/RELIABILITY.md,
# "Heap corruption at exit"). Usage: measure.sh N LOGDIR command args...
# Prints one line per run that failed, then `runs N, ok A, aborts B, other C`.
# Run it under `nice -n 19`: it is meant for a shared machine.
set -uo pipefail
n="$1" logdir="$2"; shift 2
mkdir -p "$logdir"
sig='corrupted size vs. prev_size|double free|free\(\): invalid|malloc\(\)|munmap_chunk|malloc_consolidate|corrupted double-linked'
ok=0 aborts=0 other=0
for i in $(seq 1 "$n"); do
  log="$logdir/run$i.log"
  "$@" >"$log" 2>&1
  rc=$?
  if [ "$rc" = 0 ]; then ok=$((ok + 1)); rm -f "$log"; continue; fi
  if grep -qE "$sig" "$log"; then
    aborts=$((aborts + 1))
    echo "run $i: rc $rc abort: $(grep -oE "$sig" "$log" | head -n 1)"
  else
    other=$((other + 1))
    echo "run $i: rc $rc (no heap signature; see $log)"
  fi
done
echo "runs $n, ok $ok, aborts $aborts, other $other"
