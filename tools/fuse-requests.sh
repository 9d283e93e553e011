#!/usr/bin/env bash
# Count the FUSE requests a command causes, by opcode, from the kernel's own tracepoint
# (events/fuse/fuse_request_send, Linux 6.x), so a change's saved round trips are counted,
# not guessed. Needs root and tracefs. Every FUSE mount is counted, so run it with only the
# mount under test busy.
#
#   tools/fuse-requests.sh COMMAND [ARG...]
#   tools/fuse-requests.sh rsync -a /usr/share/doc/ /mnt/coffer/doc/
#   FILES=25319 tools/fuse-requests.sh tar xf small.tar -C /mnt/coffer   # also per file
set -euo pipefail
[ $# -gt 0 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
T=/sys/kernel/tracing
[ -d "$T/events" ] || mount -t tracefs nodev "$T"
ev="$T/events/fuse/fuse_request_send"
[ -d "$ev" ] || { echo "fuse-requests: this kernel has no fuse tracepoints ($ev)" >&2; exit 2; }
echo 65536 > "$T/buffer_size_kb"
echo > "$T/trace"
echo 1 > "$ev/enable"
trap 'echo 0 > "$ev/enable"' EXIT
status=0
"$@" || status=$?
sync
echo 0 > "$ev/enable"
lost=$(awk '/overrun:/ {n += $2} END {print n + 0}' "$T"/per_cpu/cpu*/stats)
[ "$lost" = 0 ] || echo "fuse-requests: the trace buffer overran; $lost events lost, counts are low" >&2
grep -o 'FUSE_[A-Z_0-9]*' "$T/trace" | sort | uniq -c | sort -rn |
  awk -v files="${FILES:-0}" '{t += $1; printf "%10d  %s", $1, $2; if (files > 0) printf "  (%.2f per file)", $1 / files; print ""}
       END {printf "%10d  total", t; if (files > 0) printf "  (%.2f per file)", t / files; print ""}'
exit "$status"
