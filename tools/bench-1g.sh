#!/usr/bin/env bash
# A 1 GiB file written (dd bs=1M, then fsync) and read back cold through coffer, gocryptfs and
# a plain directory, interleaved, N runs each (default 3), on the same disk. Prints MB/s
# medians and coffer's ratio to gocryptfs. A quick check, not the full suite (tools/bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
size_mb=${COFFER_BENCH_MB:-1024}
bash tools/setup.sh
command -v gocryptfs >/dev/null || apt-get install -y -qq gocryptfs >/dev/null
cargo build --release --locked --quiet
coffer="$PWD/target/release/coffer"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/coffer-bench.XXXXXX")
cleanup() { "$coffer" umount "$work/c-mnt" 2>/dev/null || true; fusermount3 -uz "$work/g-mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work"/{plain,c-mnt,g-cipher,g-mnt}
echo bench-pass > "$work/pass"
export COFFER_KEYSTORE="$work/ks" COFFER_PASSPHRASE_FILE="$work/pass"
"$coffer" init "$work/c-store" >/dev/null
gocryptfs -q -init -passfile "$work/pass" "$work/g-cipher" >/dev/null 2>&1

mount_c() { "$coffer" mount "$work/c-store" "$work/c-mnt" --log "$work/c.log"; }
umount_c() { "$coffer" umount "$work/c-mnt"; }
mount_g() { gocryptfs -q -passfile "$work/pass" "$work/g-cipher" "$work/g-mnt"; }
umount_g() { fusermount3 -u "$work/g-mnt"; while pgrep -f "gocryptfs.*$work/g-mnt" >/dev/null; do sleep 0.05; done; }
now() { date +%s%N; }
# MB/s (10^6 bytes per second) from elapsed nanoseconds.
mbps() { awk -v b="$((size_mb * 1048576))" -v ns="$1" 'BEGIN {printf "%.0f", b * 1000 / ns}'; }

declare -A W R
for run in $(seq "$runs"); do
  for sys in plain coffer gocryptfs; do
    case $sys in
      plain) dir="$work/plain"; up=true; down=true ;;
      coffer) dir="$work/c-mnt"; up=mount_c; down=umount_c ;;
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
printf '%-10s %12s %12s   (runs: write / read MB/s)\n' system "write MB/s" "read MB/s"
for sys in plain coffer gocryptfs; do
  printf '%-10s %12s %12s   %s/ %s\n' $sys "$(echo ${W[$sys]} | median)" "$(echo ${R[$sys]} | median)" "${W[$sys]}" "${R[$sys]}"
done
cw=$(echo ${W[coffer]} | median); gw=$(echo ${W[gocryptfs]} | median)
cr=$(echo ${R[coffer]} | median); gr=$(echo ${R[gocryptfs]} | median)
awk -v a="$cw" -v b="$gw" -v c="$cr" -v d="$gr" 'BEGIN {printf "coffer / gocryptfs: write %.2fx, read %.2fx\n", a/b, c/d}'
