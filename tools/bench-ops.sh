#!/usr/bin/env bash
# What single metadata operations cost through a mount, in microseconds each: create, chmod,
# chown, utimens, rename, stat and unlink of N files, one process doing each in turn (no
# process start per operation). Two binaries, interleaved, fresh store per round:
#
#   tools/bench-ops.sh [REV] [ROUNDS] [N]     coffer now (A) against coffer at REV (B)
#                                             (default REV: HEAD, ROUNDS 3, N 3000)
#
# Prints each round's figures and the median per operation and binary. The machine is noisy
# (create varies 3x between rounds): read ratios of medians, never one round.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-HEAD}; rounds=${2:-3}; n=${3:-3000}
bash tools/setup.sh
cargo build --release --locked --quiet
work=$(mktemp -d /tmp/coffer-ops.XXXXXX)
git worktree add --detach -q "$work/rev-src" "$rev"
cargo build --release --locked --quiet --manifest-path "$work/rev-src/Cargo.toml" --target-dir "$PWD/target/baseline"
git worktree remove --force "$work/rev-src"
cp target/release/coffer "$work/A"; cp target/baseline/release/coffer "$work/B"
mkdir "$work/mnt"; echo ops > "$work/pass"
cleanup() { for s in A B; do "$work/$s" umount "$work/mnt" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export COFFER_PASSPHRASE_FILE="$work/pass"
cat > "$work/ops.py" <<'PY'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
names = [os.path.join(d, f"f{i:05d}") for i in range(n)]
def t(label, f):
    t0 = time.perf_counter()
    for p in names:
        f(p)
    print(f"{label} {(time.perf_counter() - t0) / n * 1e6:.1f}")
t("create", lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)))
t("chmod", lambda p: os.chmod(p, 0o600))
t("chown", lambda p: os.chown(p, 1000, 1000))
t("utimens", lambda p: os.utime(p, (1000000, 1000000)))
t("rename", lambda p: os.rename(p, p + "r"))
names = [p + "r" for p in names]
t("stat", lambda p: os.lstat(p))
t("unlink", lambda p: os.unlink(p))
PY
declare -A R
for r in $(seq "$rounds"); do
  for s in $([ $((r % 2)) = 1 ] && echo "A B" || echo "B A"); do
    export COFFER_KEYSTORE="$work/ks-$s"
    "$work/$s" init "$work/store-$s-$r" --rsa-bits 2048 > /dev/null
    "$work/$s" mount "$work/store-$s-$r" "$work/mnt" --log "$work/$s.log"
    out=$(python3 "$work/ops.py" "$work/mnt/d" "$n")
    "$work/$s" umount "$work/mnt"; rm -rf "$work/store-$s-$r"
    echo "round $r $s: $(echo "$out" | tr '\n' ' ')"
    while read -r op us; do R[$op,$s]+="$us "; done <<< "$out"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo; echo "| operation | A (now) us | B ($rev) us | A/B |"; echo "|---|---|---|---|"
for op in create chmod chown utimens rename stat unlink; do
  a=$(echo "${R[$op,A]}" | median); b=$(echo "${R[$op,B]}" | median)
  echo "| $op | $a | $b | $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}') |"
done
