# Sourced by tools/bench.sh and tools/bench-ab.sh: the inputs both measure with, made once on
# the plain disk in DIR: big (BIG_MB of random bytes), small/ (NFILES files of 4 KiB in 100
# directories) and small.tar, tree/ (a copy of what TREE_GLOB names), and sparse (2 GiB
# holding 1 MiB of random bytes in four places, the rest holes).
#   bench_inputs DIR BIG_MB NFILES TREE_GLOB
bench_inputs() {
  local dir=$1 big_mb=$2 nfiles=$3 tree_glob=$4
  mkdir -p "$dir/small" "$dir/tree"
  head -c $((big_mb << 20)) /dev/urandom > "$dir/big"
  python3 - "$dir/small" "$nfiles" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        f.write(os.urandom(4096))
PY
  tar cf "$dir/small.tar" -C "$dir" small
  truncate -s 2G "$dir/sparse"
  for at in 0 600 1300 2047; do
    head -c 262144 /dev/urandom | dd of="$dir/sparse" bs=1M seek="$at" conv=notrunc status=none
  done
  # shellcheck disable=SC2086
  cp -a $tree_glob "$dir/tree/" 2>/dev/null || true
}
