#!/usr/bin/env bash
# Make tests/fixtures/store-vN: a small store of the current format version, with its
# keystore, passphrase and a manifest of what it holds (from format 3 a tar of them,
# store-vN.tar, which keeps the store's extended attributes and hard links). Run once per
# released format version and commit the result; tests/backward_compatibility.rs mounts
# every fixture.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bin=target/debug/coffer
v=$(grep -o 'STORE_VERSION: u32 = [0-9]*' src/format/mod.rs | grep -o '[0-9]*$')
out=tests/fixtures/store-v$v
for o in "$out" "$out.tar"; do
  [ -e "$o" ] && { echo "$o exists; remove it first if you really mean to remake it" >&2; exit 2; }
done
work=$(mktemp -d); trap 'fusermount3 -uz "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$out" "$work/mnt" "$work/src/dir/sub"
printf 'fixture passphrase v%s\n' "$v" > "$out/passphrase"
export COFFER_KEYSTORE="$out/keystore" COFFER_PASSPHRASE_FILE="$out/passphrase"
python3 - "$work/src" <<'PY'
import os, sys
r = sys.argv[1]
def pat(seed, n):
    x = (seed * 0x9E3779B97F4A7C15 | 1) & (2**64 - 1); out = bytearray()
    for _ in range(n):
        x ^= (x << 13) & (2**64 - 1); x ^= x >> 7; x ^= (x << 17) & (2**64 - 1); out.append(x & 0xff)
    return bytes(out)
for i, n in enumerate([0, 1, 65535, 65536, 65537, 150000]):
    open(f"{r}/size-{n}", "wb").write(pat(i + 1, n))
open(f"{r}/dir/sub/deep.txt", "w").write("a file two directories down\n")
open(f"{r}/" + "long-" * 40 + "name", "w").write("a 205-byte name\n")
os.symlink("dir/sub/deep.txt", f"{r}/link")
os.link(f"{r}/size-65537", f"{r}/dir/hardlink")
PY
$bin init "$out/store" --rsa-bits 2048 --policy fixture --copy v$v >/dev/null
$bin mount "$out/store" "$work/mnt" --log "$work/log"
rsync -aH "$work/src/" "$work/mnt/"
$bin umount "$work/mnt"
rm -f "$out/store/lock" "$out/keystore/keystore.lock" "$out/keystore/audit.log"
# The manifest: type, path, and size plus SHA-256 of the content (or the link target).
(cd "$work/src" && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
  if [ -L "$p" ]; then echo "l $p $(readlink "$p")";
  elif [ -d "$p" ]; then echo "d $p";
  else echo "f $p $(stat -c %s "$p") $(sha256sum < "$p" | cut -d' ' -f1)"; fi
done) > "$out/manifest"
if [ "$v" -ge 3 ]; then
  # Git keeps neither extended attributes (from format 3, every inode's sealed record is one)
  # nor hard links: the fixture is committed as a tar that keeps both.
  tar --xattrs --xattrs-include='*' -C "$out" -cf "$out.tar" .
  rm -rf "$out"
  out="$out.tar"
fi
echo "made $out"
