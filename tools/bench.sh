#!/usr/bin/env bash
# Side-by-side benchmark: a plain directory (the limit), coffer, gocryptfs and securefs on the
# same disk (a fresh journaled ext4 image: tools/bench-disk.sh says why), interleaved, median
# of 3 runs. Prints a table with each system's ratio to the plain
# directory and coffer's ratio to the better anchor, and appends it to docs/benchmarks.md.
#   tools/bench.sh            1 GiB, 10,000 files, /usr/share/doc and /usr/share/man
#   tools/bench.sh --quick    64 MiB, 1,000 files, part of /usr/share/doc (about 2 minutes)
#   COFFER_BASELINE=REV tools/bench.sh   also runs coffer as built at git revision REV, in the
#                             same interleaved loop, and adds a coffer/baseline column: what a
#                             change costs or buys, measured against the same anchors
#   COFFER_BASELINE=HEAD COFFER_BASELINE_OPTS=--no-io-uring tools/bench.sh
#                             the baseline mounted with options of its own: here, what FUSE
#                             over io_uring buys, per workload
# FUSE over io_uring is turned on for the run where the kernel has it (the fuse module's
# enable_uring parameter, put back afterwards): coffer uses it by default when offered.
# W1 write+sync, W1u the same including unmount and daemon exit, W2 cold read, W3 untar small
# files + sync, W4 cold tar of them, W5 rsync -a a tree in / again after 1 % changed,
# W6 rsync --no-whole-file literal bytes after a 4 KiB in-place change, W7 peak RSS,
# W8 cp --sparse=always of a 2 GiB file holding 1 MiB (a VM image) + sync, W8b the space it
# takes in the store.
# Runs alternate the order of the systems (forward, then reversed).
# Then tools/bench-backup.sh: coffer backup/restore against restic and rsync through a mount.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0; [ "${1:-}" = "--quick" ] && quick=1
runs=${COFFER_BENCH_RUNS:-3}
if [ $quick = 1 ]; then big_mb=64; nfiles=1000; tree_glob='/usr/share/doc/[a-c]*'; else big_mb=1024; nfiles=10000; tree_glob='/usr/share/doc/* /usr/share/man'; fi
bash tools/setup.sh
for p in gocryptfs securefs bindfs; do command -v $p >/dev/null || { apt-get install -y -qq $p >/dev/null; }; done
cargo build --release --locked --quiet
coffer="$PWD/target/release/coffer"
. tools/bench-disk.sh
bench_disk_up
work=$(mktemp -d "$BENCH_BASE/coffer-bench.XXXXXX")
# bindfs is a FUSE passthrough (libfuse, no encryption): what FUSE itself costs per workload.
systems="plain bindfs coffer gocryptfs securefs"
baseline_bin=""
if [ -n "${COFFER_BASELINE:-}" ]; then
  git worktree add --detach -q "$work/baseline-src" "$COFFER_BASELINE"
  cargo build --release --locked --quiet --manifest-path "$work/baseline-src/Cargo.toml" --target-dir "$PWD/target/baseline"
  git worktree remove --force "$work/baseline-src"
  baseline_bin="$PWD/target/baseline/release/coffer"
  systems="$systems baseline"
fi
# The coffer binary a system name stands for.
cbin() { if [ "$1" = baseline ]; then echo "$baseline_bin"; else echo "$coffer"; fi; }
is_coffer() { [ "$1" = coffer ] || [ "$1" = baseline ]; }
. tools/fuse-uring.sh
uring_on || true
cleanup() {
  uring_restore
  "$coffer" umount "$work/coffer/mnt" 2>/dev/null || true
  [ -n "$baseline_bin" ] && { "$baseline_bin" umount "$work/baseline/mnt" 2>/dev/null || true; }
  for s in bindfs gocryptfs securefs; do fusermount3 -uz "$work/$s/mnt" 2>/dev/null || true; done
  rm -rf "$work"
  bench_disk_down
}
trap cleanup EXIT
echo bench-pass > "$work/pass"
export COFFER_KEYSTORE="$work/ks" COFFER_PASSPHRASE_FILE="$work/pass"
for s in $systems; do mkdir -p "$work/$s/mnt" "$work/$s/store"; done
"$coffer" init "$work/coffer/store/s" >/dev/null
[ -n "$baseline_bin" ] && COFFER_KEYSTORE="$work/ks-baseline" "$baseline_bin" init "$work/baseline/store/s" >/dev/null
gocryptfs -q -init -passfile "$work/pass" "$work/gocryptfs/store" >/dev/null 2>&1
securefs create --pass bench-pass "$work/securefs/store" >/dev/null 2>&1

mnt() { if [ "$1" = plain ]; then echo "$work/plain/store"; else echo "$work/$1/mnt"; fi; }
store() { if is_coffer "$1"; then echo "$work/$1/store/s"; else echo "$work/$1/store"; fi; }
pid_of() {
  case $1 in
    coffer|baseline) head -1 "$work/$1/store/s/lock" ;;
    gocryptfs) pgrep -f "gocryptfs.*$work/gocryptfs/mnt" | head -1 ;;
    securefs) pgrep -f "securefs.*$work/securefs/mnt" | head -1 ;;
    bindfs) pgrep -f "bindfs.*$work/bindfs/mnt" | head -1 ;;
  esac
}
peak_kb=""
up() {
  case $1 in
    plain) ;;
    coffer) "$coffer" mount "$work/coffer/store/s" "$work/coffer/mnt" --log "$work/coffer.log" ;;
    # shellcheck disable=SC2086 # the options are words
    baseline) COFFER_KEYSTORE="$work/ks-baseline" "$baseline_bin" mount "$work/baseline/store/s" "$work/baseline/mnt" --log "$work/baseline.log" ${COFFER_BASELINE_OPTS:-} ;;
    gocryptfs) gocryptfs -q -passfile "$work/pass" "$work/gocryptfs/store" "$work/gocryptfs/mnt" ;;
    bindfs) bindfs "$work/bindfs/store" "$work/bindfs/mnt" ;;
    securefs) securefs mount -b --pass bench-pass "$work/securefs/store" "$work/securefs/mnt" >/dev/null 2>&1
              while ! grep -q " $work/securefs/mnt " /proc/self/mountinfo; do sleep 0.05; done ;;
  esac
}
down() {
  [ "$1" = plain ] && { sync; return; }
  local pid; pid=$(pid_of "$1" || true)
  if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
    local kb; kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    peak_kb="$peak_kb $1:$kb"
  fi
  case $1 in
    coffer|baseline) "$(cbin "$1")" umount "$work/$1/mnt" ;;
    *) fusermount3 -u "$(mnt "$1")"; while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.02; done ;;
  esac
}
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s%N; }
rate() { awk -v n="$1" -v ns="$2" 'BEGIN {printf "%.1f", n * 1e9 / ns}'; }

# Inputs on the plain disk, prepared once.
. tools/bench-inputs.sh
bench_inputs "$work/in" "$big_mb" "$nfiles" "$tree_glob"
tree_bytes=$(du -sb "$work/in/tree" | cut -f1); tree_files=$(find "$work/in/tree" -type f | wc -l)
declare -A R
add() { R[$1,$2]+="$3 "; }

for run in $(seq "$runs"); do
  # Odd runs go through the systems in order, even runs in reverse, so that no system always
  # runs right after the same neighbour (or always first or last).
  order=$systems; [ $((run % 2)) = 0 ] && order=$(echo "$systems" | tr ' ' '\n' | tac | tr '\n' ' ')
  for s in $order; do
    m=$(mnt "$s")
    # W1 / W1u / W2
    up "$s"; cold
    t0=$(now); dd if="$work/in/big" of="$m/big" bs=1M conv=fsync status=none; t1=$(now)
    down "$s"; t2=$(now)
    add W1 "$s" "$(rate $((big_mb << 20)) $((t1 - t0)) | awk '{printf "%.0f", $1/1e6}')"
    add W1u "$s" "$(rate $((big_mb << 20)) $((t2 - t0)) | awk '{printf "%.0f", $1/1e6}')"
    cold; up "$s"
    t0=$(now); cat "$m/big" > /dev/null; t1=$(now)
    add W2 "$s" "$(rate $((big_mb << 20)) $((t1 - t0)) | awk '{printf "%.0f", $1/1e6}')"
    # W6: an auxiliary copy, then a 4 KiB in-place change, then rsync's literal bytes
    down "$s"; rm -rf "$work/copy"; rsync -a --no-whole-file "$(store "$s")/" "$work/copy/"
    up "$s"; dd if=/dev/urandom of="$m/big" bs=4096 count=1 seek=$(( (big_mb << 20) / 8192 )) conv=notrunc,fsync status=none; down "$s"
    lit=$(rsync -a -I --no-whole-file --stats "$(store "$s")/" "$work/copy/" | awk -F': ' '/Literal data/ {gsub(/[^0-9]/, "", $2); print $2}')
    add W6 "$s" "$lit"
    up "$s"; rm -f "$m/big"
    # W3 / W4
    t0=$(now); tar xf "$work/in/small.tar" -C "$m"; sync; t1=$(now)
    add W3 "$s" "$(rate "$nfiles" $((t1 - t0)))"
    down "$s"; cold; up "$s"
    t0=$(now); tar cf - -C "$m" small | cat > /dev/null; t1=$(now)
    add W4 "$s" "$(rate "$nfiles" $((t1 - t0)))"
    rm -rf "$m/small"
    # W5: rsync a tree in, change 1 % of its files, rsync again
    rm -rf "$work/tree2"; cp -a "$work/in/tree" "$work/tree2"
    t0=$(now); rsync -a "$work/tree2/" "$m/tree/"; sync; t1=$(now)
    add W5 "$s" "$(awk -v ns=$((t1 - t0)) 'BEGIN {printf "%.2f", ns/1e9}')"
    find "$work/tree2" -type f | awk 'NR % 100 == 0' | while read -r f; do printf 'changed' >> "$f"; done
    t0=$(now); rsync -a "$work/tree2/" "$m/tree/"; sync; t1=$(now)
    add W5b "$s" "$(awk -v ns=$((t1 - t0)) 'BEGIN {printf "%.2f", ns/1e9}')"
    rm -rf "$m/tree"
    # W8 / W8b: a sparse file in, and what it takes on disk
    sync; k0=$(du -sk "$(store "$s")" | cut -f1)
    t0=$(now); cp --sparse=always "$work/in/sparse" "$m/sparse"; sync; t1=$(now)
    k1=$(du -sk "$(store "$s")" | cut -f1)
    add W8 "$s" "$(awk -v ns=$((t1 - t0)) 'BEGIN {printf "%.2f", ns/1e9}')"
    add W8b "$s" "$((k1 - k0))"
    rm -f "$m/sparse"
    down "$s"
    echo "run $run: $s done" >&2
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
peak() { echo "$peak_kb" | tr ' ' '\n' | awk -F: -v s="$1" '$1 == s && $2 > m {m = $2} END {printf "%.0f", m/1024}'; }

table=$(
  if [ -n "$baseline_bin" ]; then
    printf '| workload | unit | plain | FUSE passthrough (bindfs) | coffer | gocryptfs | securefs | coffer/plain | coffer/passthrough | coffer/better anchor | baseline (%s) | baseline/better anchor | coffer/baseline |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n' "$COFFER_BASELINE${COFFER_BASELINE_OPTS:+ $COFFER_BASELINE_OPTS}"
  else
    printf '| workload | unit | plain | FUSE passthrough (bindfs) | coffer | gocryptfs | securefs | coffer/plain | coffer/passthrough | coffer/better anchor |\n|---|---|---|---|---|---|---|---|---|---|\n'
  fi
  for w in W1 W1u W2 W3 W4 W5 W5b W6 W7 W8 W8b; do
    case $w in
      W1|W1u|W2) unit="MB/s"; better=high ;; W3|W4) unit="files/s"; better=high ;;
      W5|W5b|W8) unit="s"; better=low ;; W6) unit="literal bytes"; better=low ;; W7) unit="peak RSS MiB"; better=low ;;
      W8b) unit="store KiB"; better=low ;;
    esac
    declare -A M
    for s in $systems; do
      if [ $w = W7 ]; then M[$s]=$( [ $s = plain ] && echo - || peak $s ); else M[$s]=$(echo ${R[$w,$s]} | median); fi
    done
    ratio() { awk -v a="$1" -v b="$2" -v hi="$3" 'BEGIN { if (a == "-" || b == "-" || a+0 == 0 || b+0 == 0) {print "-"; exit} r = (hi == "high") ? a / b : b / a; printf "%.2fx", r }'; }
    if [ $better = high ]; then anchor=$(awk -v g="${M[gocryptfs]}" -v s="${M[securefs]}" 'BEGIN {print (g > s) ? g : s}');
    else anchor=$(awk -v g="${M[gocryptfs]}" -v s="${M[securefs]}" 'BEGIN {print (g < s) ? g : s}'); fi
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' "$w" "$unit" "${M[plain]}" "${M[bindfs]}" "${M[coffer]}" "${M[gocryptfs]}" "${M[securefs]}" \
      "$(ratio "${M[coffer]}" "${M[plain]}" $better)" "$(ratio "${M[coffer]}" "${M[bindfs]}" $better)" "$(ratio "${M[coffer]}" "$anchor" $better)"
    if [ -n "$baseline_bin" ]; then
      printf ' %s | %s | %s |' "${M[baseline]}" "$(ratio "${M[baseline]}" "$anchor" $better)" "$(ratio "${M[coffer]}" "${M[baseline]}" $better)"
    fi
    printf '\n'
  done
)
echo "$table"
{
  echo
  echo "## tools/bench.sh$([ $quick = 1 ] && echo ' --quick'), $(date -u +%Y-%m-%d)"
  echo
  echo "$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r); $("$coffer" --version); gocryptfs $(gocryptfs -version | awk '{gsub(";", "", $2); print $2; exit}'); bindfs $(bindfs --version | awk '{print $2; exit}'); securefs from Debian; coffer served through $(sed -n 's/.* INFO serving .* through //p' "$work/coffer.log" | tail -1). On $BENCH_DISK. Medians of $runs; ${big_mb} MiB file, $nfiles small files, tree of $tree_files files / $tree_bytes bytes. Ratios above 1 mean coffer is better (for times, bytes and memory the ratio is inverted)."
  echo
  echo "$table"
} >> docs/benchmarks.md
# Backup and restore without a mount (coffer backup/restore against restic), on a disk of
# their own once this run's is gone; COFFER_BENCH_BACKUP=0 leaves them out.
if [ "${COFFER_BENCH_BACKUP:-1}" = 1 ]; then
  cleanup; trap - EXIT
  bash tools/bench-backup.sh $([ $quick = 1 ] && echo --quick)
fi
