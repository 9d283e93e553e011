#!/usr/bin/env bash
# Backup and restore without a mount, side by side: `coffer backup`/`coffer restore`, restic
# backup/restore (a local repository, its password in a file), and rsync -a into and out of a
# coffer mount, on the same fresh disk (tools/bench-disk.sh), interleaved, median of 3 rounds.
# Three sets: N small files of 4 KiB (the W3 set), a tree (/usr/share/doc and /usr/share/man,
# the W5 tree), one 1 GiB file. For each: a first backup, a second after 1 % of the files
# changed (for the big file: 1 MiB in its middle), and a restore into an empty directory.
# Caches are dropped before every timed step, and every step ends with sync.
# Peak memory (max RSS) of coffer's and restic's own process is reported too.
#   tools/bench-backup.sh           10,000 files, the whole tree, 1 GiB
#   tools/bench-backup.sh --quick   1,000 files, part of /usr/share/doc, 64 MiB
# Prints a table and appends it to docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0; [ "${1:-}" = "--quick" ] && quick=1
runs=${COFFER_BENCH_RUNS:-3}
if [ $quick = 1 ]; then big_mb=64; nfiles=1000; tree_glob='/usr/share/doc/[a-c]*'
else big_mb=1024; nfiles=10000; tree_glob='/usr/share/doc/* /usr/share/man'; fi
command -v restic >/dev/null || apt-get install -y -qq restic >/dev/null
command -v rsync >/dev/null || apt-get install -y -qq rsync >/dev/null
[ -x /usr/bin/time ] || apt-get install -y -qq time >/dev/null
cargo build --release --locked --quiet
coffer="$PWD/target/release/coffer"
. tools/bench-disk.sh
bench_disk_up
work=$(mktemp -d "$BENCH_BASE/coffer-bbench.XXXXXX")
. tools/fuse-uring.sh
uring_on || true
cleanup() {
  uring_restore
  "$coffer" umount "$work/mnt" 2>/dev/null || true
  rm -rf "$work"
  bench_disk_down
}
trap cleanup EXIT
echo bench-pass > "$work/pass"
export COFFER_KEYSTORE="$work/ks" COFFER_PASSPHRASE_FILE="$work/pass"
export RESTIC_PASSWORD_FILE="$work/pass" RESTIC_CACHE_DIR="$work/restic-cache"
mkdir -p "$work/src/small" "$work/src/tree" "$work/src/big" "$work/mnt"
for i in $(seq 0 $((nfiles - 1))); do
  d="$work/src/small/d$((i % 100))"; [ -d "$d" ] || mkdir "$d"
  head -c 4096 /dev/urandom > "$d/f$i"
done
# shellcheck disable=SC2086
cp -a $tree_glob "$work/src/tree/"
head -c $((big_mb << 20)) /dev/urandom > "$work/src/big/file"
echo "sets: $(find "$work/src/small" -type f | wc -l) small files, tree of $(find "$work/src/tree" -type f | wc -l) files ($(du -sm "$work/src/tree" | cut -f1) MB), $big_mb MiB file; disk: $BENCH_DISK"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# Change 1 % of a set's files (every 100th: a line appended), or 1 MiB in the big file's middle.
change() {
  if [ "$1" = big ]; then
    head -c 1048576 /dev/urandom | dd of="$work/src/big/file" bs=1M seek=$((big_mb / 2)) conv=notrunc status=none
  else
    find "$work/src/$1" -type f | sort | awk 'NR % 100 == 1' | while read -r f; do echo changed >> "$f"; done
  fi
}
# Run a command timed; appends "SECONDS PEAK_KIB" to $work/t.
timed() { drop; /usr/bin/time -f '%e %M' -o "$work/t1" "$@" > /dev/null; sync; cat "$work/t1" >> "$work/t"; }
# One round of one system on one set: backup, incremental, restore. Prints three times and
# the largest peak RSS.
one() {
  local sys=$1 set=$2 out="$work/out" r="$work/repo"
  rm -rf "$out" "$r" "$work/ks" "$work/restic-cache"; : > "$work/t"
  case $sys in
    coffer)
      "$coffer" init "$r" >/dev/null
      timed "$coffer" backup "$work/src/$set/" "$r:s"
      change "$set"
      timed "$coffer" backup "$work/src/$set/" "$r:s"
      timed "$coffer" restore "$r:s/" "$out" ;;
    restic)
      restic init -q -r "$r" >/dev/null
      timed restic -q -r "$r" backup "$work/src/$set"
      change "$set"
      timed restic -q -r "$r" backup "$work/src/$set"
      timed restic -q -r "$r" restore latest --target "$out" ;;
    mount)
      "$coffer" init "$r" >/dev/null
      "$coffer" mount "$r" "$work/mnt"
      timed rsync -a "$work/src/$set/" "$work/mnt/s/"
      change "$set"
      timed rsync -a "$work/src/$set/" "$work/mnt/s/"
      timed rsync -a "$work/mnt/s/" "$out/"
      "$coffer" umount "$work/mnt" ;;
  esac
  awk '{ t = t " " $1; if ($2 > m) m = $2 } END { print t, m }' "$work/t"
}
systems="coffer restic mount"
for set in small tree big; do
  for round in $(seq 1 "$runs"); do
    order=$systems; [ $((round % 2)) = 0 ] && order=$(echo "$systems" | tr ' ' '\n' | tac | tr '\n' ' ')
    for sys in $order; do
      echo "$set $sys $(one "$sys" "$set")" >> "$work/results"
      tail -1 "$work/results"
    done
  done
done

table=$(python3 - "$work/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    s, sys_, b, i, r, m = line.split()
    rows.setdefault((s, sys_), []).append((float(b), float(i), float(r), int(m)))
med = lambda xs: statistics.median(xs)
print("| set | step | coffer backup/restore, s | restic, s | rsync through the mount, s | restic / coffer | mount / coffer |")
print("|---|---|---|---|---|---|---|")
names = {"small": "small files", "tree": "tree", "big": "1 GiB file"}
for s in ["small", "tree", "big"]:
    for k, step in enumerate(["backup", "incremental", "restore"]):
        c, rs, mt = (med([x[k] for x in rows[(s, y)]]) for y in ("coffer", "restic", "mount"))
        print(f"| {names[s]} | {step} | {c:.2f} | {rs:.2f} | {mt:.2f} | {rs / c:.2f}x | {mt / c:.2f}x |")
for s in ["small", "tree", "big"]:
    c, rs = (max(x[3] for x in rows[(s, y)]) for y in ("coffer", "restic"))
    print(f"| {names[s]} | peak RSS, MiB | {c / 1024:.0f} | {rs / 1024:.0f} | | | |")
EOF
)
echo "$table"
{
  echo
  echo "## Backup and restore without a mount: $(date -u +%Y-%m-%d) ($(git rev-parse --short HEAD))"
  echo
  echo "\`tools/bench-backup.sh$([ $quick = 1 ] && echo ' --quick')\`: $nfiles files of 4 KiB, the tree ($tree_glob), a $big_mb MiB file; medians of $runs interleaved rounds on $BENCH_DISK; caches dropped before each step, each step ends with sync; restic $(restic version | cut -d' ' -f2)."
  echo
  echo "$table"
} >> docs/benchmarks.md
