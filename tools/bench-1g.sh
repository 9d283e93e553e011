#!/usr/bin/env bash
# A 1 GiB file written (dd bs=1M, then fsync) and read back cold through coffer, gocryptfs and
# a plain directory, interleaved, N runs each (default 3), on the same disk. Prints MB/s
# medians and coffer's ratio to gocryptfs. A quick check, not the full suite (tools/bench.sh).
#
# Levers, compared in the same run:
#   COFFER_BLOCKS="4K 64K"           one coffer store per block size (default: 4K)
#   COFFER_MOUNT_ARGS="--threads 2"  extra arguments for every coffer mount
#   COFFER_BENCH_MB=256              a smaller file
# Example: COFFER_BLOCKS="4K 16K 64K" tools/bench-1g.sh 5
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
size_mb=${COFFER_BENCH_MB:-1024}
blocks=${COFFER_BLOCKS:-4K}
read -r -a mount_args <<< "${COFFER_MOUNT_ARGS:-}"
bash tools/setup.sh
command -v gocryptfs >/dev/null || apt-get install -y -qq gocryptfs >/dev/null
cargo build --release --locked --quiet
coffer="$PWD/target/release/coffer"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/coffer-bench.XXXXXX")
cleanup() {
  for b in $blocks; do "$coffer" umount "$work/c-mnt-$b" 2>/dev/null || true; done
  fusermount3 -uz "$work/g-mnt" 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{plain,g-cipher,g-mnt}
echo bench-pass > "$work/pass"
export COFFER_KEYSTORE="$work/ks" COFFER_PASSPHRASE_FILE="$work/pass"
for b in $blocks; do
  mkdir -p "$work/c-mnt-$b"
  "$coffer" init "$work/c-store-$b" --block-size "$b" >/dev/null
done
gocryptfs -q -init -passfile "$work/pass" "$work/g-cipher" >/dev/null 2>&1

mount_c() { "$coffer" mount "$work/c-store-$1" "$work/c-mnt-$1" --log "$work/c.log" "${mount_args[@]}"; }
umount_c() { "$coffer" umount "$work/c-mnt-$1"; }
mount_g() { gocryptfs -q -passfile "$work/pass" "$work/g-cipher" "$work/g-mnt"; }
umount_g() { fusermount3 -u "$work/g-mnt"; while pgrep -f "gocryptfs.*$work/g-mnt" >/dev/null; do sleep 0.05; done; }
now() { date +%s%N; }
# MB/s (10^6 bytes per second) from elapsed nanoseconds.
mbps() { awk -v b="$((size_mb * 1048576))" -v ns="$1" 'BEGIN {printf "%.0f", b * 1000 / ns}'; }

systems="plain"; for b in $blocks; do systems="$systems coffer-$b"; done; systems="$systems gocryptfs"
declare -A W R
for run in $(seq "$runs"); do
  for sys in $systems; do
    case $sys in
      plain) dir="$work/plain"; up=true; down=true ;;
      coffer-*) b=${sys#coffer-}; dir="$work/c-mnt-$b"; up="mount_c $b"; down="umount_c $b" ;;
      gocryptfs) dir="$work/g-mnt"; up=mount_g; down=umount_g ;;
    esac
    $up
    sync; echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); dd if=/dev/zero of="$dir/big" bs=1M count="$size_mb" conv=fsync status=none; t1=$(now)
    $down; sync; echo 3 > /proc/sys/vm/drop_caches; $up
    t2=$(now); cat "$dir/big" > /dev/null; t3=$(now)
    rm -f "$dir/big"; $down
    W[$sys]+="$(mbps $((t1 - t0))) "; R[$sys]+="$(mbps $((t3 - t2))) "
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-12s %12s %12s   (runs: write / read MB/s)\n' system "write MB/s" "read MB/s"
for sys in $systems; do
  printf '%-12s %12s %12s   %s/ %s\n' "$sys" "$(echo ${W[$sys]} | median)" "$(echo ${R[$sys]} | median)" "${W[$sys]}" "${R[$sys]}"
done
gw=$(echo ${W[gocryptfs]} | median); gr=$(echo ${R[gocryptfs]} | median)
for b in $blocks; do
  cw=$(echo ${W[coffer-$b]} | median); cr=$(echo ${R[coffer-$b]} | median)
  awk -v n="coffer-$b" -v a="$cw" -v b="$gw" -v c="$cr" -v d="$gr" 'BEGIN {printf "%s / gocryptfs: write %.2fx, read %.2fx\n", n, a/b, c/d}'
done
