#!/usr/bin/env bash
# What a change costs: coffer as built now (A) against coffer at git revision REV (B), with a
# second copy of A (A2) as a control, on the workloads of tools/bench.sh that coffer alone
# decides: W1 (1 GiB write + fsync), W2 (its cold read), W3 (untar 10,000 files + sync), W4
# (cold tar c of them), W5/W5b (rsync -a of a tree in, and again after 1 % changed), and the
# steps of tools/bench-backup.sh without a mount: B1 (coffer backup of the tree into a fresh
# directory of the store), B2 (again after 1 % changed), B3 (its cold coffer restore), B4
# (coffer backup of the small files) and B5 (their cold restore).
#
#   tools/bench-ab.sh REV [ROUNDS]      ROUNDS defaults to 8
#   COFFER_AB_QUICK=1 tools/bench-ab.sh REV 2   (64 MiB, 1,000 files, a small tree)
#   COFFER_AB_OPTS_B=--no-io-uring tools/bench-ab.sh HEAD 6
#                       (one build, two ways of mounting it: COFFER_AB_OPTS_A is for A and A2)
#
# Why not tools/bench.sh with COFFER_BASELINE: there the two coffers keep one store each, in
# fixed directories, at fixed places in the order, and an A/A run of that loop (HEAD against
# HEAD, 2026-12-03) measured the same code 0.86x on W5 and W5b: the slot, not the code. Here
# every round makes a fresh store for each system in a fresh directory, the order rotates
# (A B A2, B A2 A, A2 A B, then the same reversed), and the A/A2 column says how far apart
# identical code lands on this machine. Only a B/A difference well outside A/A2 means anything.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: tools/bench-ab.sh REV [ROUNDS]}
rounds=${2:-8}
if [ "${COFFER_AB_QUICK:-0}" = 1 ]; then big_mb=64; nfiles=1000; tree_glob='/usr/share/doc/[a-c]*'
else big_mb=1024; nfiles=10000; tree_glob='/usr/share/doc/*'; fi
bash tools/setup.sh
cargo build --release --locked --quiet
. tools/bench-disk.sh
bench_disk_up
# As in tools/bench.sh: the ring on where the kernel has it (COFFER_AB_OPTS_B=--no-io-uring
# compares the two transports).
. tools/fuse-uring.sh
uring_on || true
work=$(mktemp -d "$BENCH_BASE/coffer-ab.XXXXXX")
git worktree add --detach -q "$work/rev-src" "$rev"
cargo build --release --locked --quiet --manifest-path "$work/rev-src/Cargo.toml" --target-dir "$PWD/target/baseline"
git worktree remove --force "$work/rev-src"
mkdir -p "$work/bin"
cp target/release/coffer "$work/bin/A"; cp target/release/coffer "$work/bin/A2"
cp target/baseline/release/coffer "$work/bin/B"
mnt="$work/mnt"; mkdir -p "$mnt"
cleanup() { for s in A B A2; do "$work/bin/$s" umount "$mnt" 2>/dev/null || true; done; rm -rf "$work"; bench_disk_down; uring_restore; }
trap cleanup EXIT
echo bench-pass > "$work/pass"
export COFFER_PASSPHRASE_FILE="$work/pass"
for s in A A2 B; do COFFER_KEYSTORE="$work/ks-$s" "$work/bin/$s" init "$work/probe-$s" >/dev/null; rm -rf "$work/probe-$s"; done

. tools/bench-inputs.sh
bench_inputs "$work/in" "$big_mb" "$nfiles" "$tree_glob"

now() { date +%s%N; }
secs() { awk -v ns="$1" 'BEGIN {printf "%.3f", ns / 1e9}'; }
mbps() { awk -v b=$((big_mb << 20)) -v ns="$1" 'BEGIN {printf "%.0f", b * 1000 / ns}'; }
fps() { awk -v n="$nfiles" -v ns="$1" 'BEGIN {printf "%.0f", n * 1e9 / ns}'; }
declare -A R
one() { # one system, one round, on a fresh store in a fresh directory
  local s=$1 store; store=$(mktemp -d "$work/store-$s.XXXXXX"); rmdir "$store"
  local run=(env COFFER_KEYSTORE="$work/ks-$s" "$work/bin/$s")
  local opts; if [ "$s" = B ]; then opts=${COFFER_AB_OPTS_B:-}; else opts=${COFFER_AB_OPTS_A:-}; fi
  "${run[@]}" init "$store" >/dev/null
  # shellcheck disable=SC2086 # the options are words
  "${run[@]}" mount "$store" "$mnt" --log "$work/$s.log" $opts
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t0 t1; t0=$(now); dd if="$work/in/big" of="$mnt/big" bs=1M conv=fsync status=none; t1=$(now)
  R[W1,$s]+="$(mbps $((t1 - t0))) "
  "${run[@]}" umount "$mnt"; sync; echo 3 > /proc/sys/vm/drop_caches
  # shellcheck disable=SC2086
  "${run[@]}" mount "$store" "$mnt" --log "$work/$s.log" $opts
  t0=$(now); cat "$mnt/big" > /dev/null; t1=$(now); R[W2,$s]+="$(mbps $((t1 - t0))) "
  rm -f "$mnt/big"
  t0=$(now); tar xf "$work/in/small.tar" -C "$mnt"; sync; t1=$(now)
  R[W3,$s]+="$(fps $((t1 - t0))) "
  "${run[@]}" umount "$mnt"; sync; echo 3 > /proc/sys/vm/drop_caches
  # shellcheck disable=SC2086
  "${run[@]}" mount "$store" "$mnt" --log "$work/$s.log" $opts
  t0=$(now); tar cf - -C "$mnt" small | cat > /dev/null; t1=$(now); R[W4,$s]+="$(fps $((t1 - t0))) "
  rm -rf "$mnt/small"
  rm -rf "$work/tree2"; cp -a "$work/in/tree" "$work/tree2"
  t0=$(now); rsync -a "$work/tree2/" "$mnt/tree/"; sync; t1=$(now); R[W5,$s]+="$(secs $((t1 - t0))) "
  find "$work/tree2" -type f | awk 'NR % 100 == 0' | while read -r f; do printf 'changed' >> "$f"; done
  t0=$(now); rsync -a "$work/tree2/" "$mnt/tree/"; sync; t1=$(now); R[W5b,$s]+="$(secs $((t1 - t0))) "
  "${run[@]}" umount "$mnt"
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now); "${run[@]}" backup "$work/in/tree/" "$store:bk" --json > /dev/null; t1=$(now)
  R[B1,$s]+="$(secs $((t1 - t0))) "
  t0=$(now); "${run[@]}" backup "$work/tree2/" "$store:bk" --json > /dev/null; t1=$(now)
  R[B2,$s]+="$(secs $((t1 - t0))) "
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now); "${run[@]}" restore "$store:bk/" "$work/restored-$s" --json > /dev/null; sync; t1=$(now)
  R[B3,$s]+="$(secs $((t1 - t0))) "
  rm -rf "$work/restored-$s"
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now); "${run[@]}" backup "$work/in/small/" "$store:sm" --json > /dev/null; t1=$(now)
  R[B4,$s]+="$(secs $((t1 - t0))) "
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now); "${run[@]}" restore "$store:sm/" "$work/restored-$s" --json > /dev/null; sync; t1=$(now)
  R[B5,$s]+="$(secs $((t1 - t0))) "
  rm -rf "$store" "$work/restored-$s"
}
orders=("A B A2" "B A2 A" "A2 A B" "A2 B A" "A A2 B" "B A A2")
for r in $(seq "$rounds"); do
  order=${orders[$(( (r - 1) % 6 ))]}
  for s in $order; do one "$s"; done
  echo "round $r ($order) done" >&2
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Paired ratios per round (round i of X against round i of Y), better > 1, then their median.
paired() {
  local w=$1 x=$2 y=$3 hi=$4
  paste <(echo "${R[$w,$x]}" | tr ' ' '\n' | grep .) <(echo "${R[$w,$y]}" | tr ' ' '\n' | grep .) |
    awk -v hi="$hi" '{ r = (hi == "high") ? $1 / $2 : $2 / $1; printf "%.3f ", r }'
}
echo
echo "coffer now (A, A2: the same build${COFFER_AB_OPTS_A:+, mounted $COFFER_AB_OPTS_A}) against coffer at $rev (B${COFFER_AB_OPTS_B:+, mounted $COFFER_AB_OPTS_B}); $rounds rounds, ${big_mb} MiB, $nfiles files"
echo
echo "Ratios above 1 mean A (coffer now) is better. A/B pairs each round's A with that round's B;"
echo "A/A2 does the same for identical code, so its spread is this machine's noise."
echo
echo "| workload | unit | A median | A2 median | B median | (A and A2) median / B median | A/B paired median | A/B per round | A/A2 paired median | A/A2 per round |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for w in W1 W2 W3 W4 W5 W5b B1 B2 B3 B4 B5; do
  case $w in W1|W2) unit=MB/s; hi=high ;; W3|W4) unit=files/s; hi=high ;; *) unit=s; hi=low ;; esac
  ab=$(paired $w A B $hi); aa=$(paired $w A A2 $hi)
  both=$(echo "${R[$w,A]} ${R[$w,A2]}" | median); b=$(echo "${R[$w,B]}" | median)
  pooled=$(awk -v a="$both" -v b="$b" -v hi="$hi" 'BEGIN {printf "%.3f", (hi == "high") ? a / b : b / a}')
  printf '| %s | %s | %s | %s | %s | %sx | %sx | %s | %sx | %s |\n' "$w" "$unit" \
    "$(echo "${R[$w,A]}" | median)" "$(echo "${R[$w,A2]}" | median)" "$b" "$pooled" \
    "$(echo "$ab" | median)" "$ab" "$(echo "$aa" | median)" "$aa"
done
echo
echo "Raw samples:"
for w in W1 W2 W3 W4 W5 W5b B1 B2 B3 B4 B5; do for s in A A2 B; do echo "$w $s: ${R[$w,$s]}"; done; done
