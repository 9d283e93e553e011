#!/usr/bin/env bash
# The tour: on a fresh Debian machine, install what is missing, build coffer in release,
# make a store under ./demo/ with a generated passphrase, back up /usr/share/doc into it
# with rsync, show what the ciphertext side looks like, unmount, remount, check every byte
# with diff -r, run fsck, and leave nothing mounted.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
echo "== building coffer (release)"
cargo build --release --locked --quiet
coffer="$PWD/target/release/coffer"
src=${COFFER_DEMO_SOURCE:-/usr/share/doc}

demo="$PWD/demo"
mnt="$demo/mnt"
cleanup() { "$coffer" umount "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true; }
trap cleanup EXIT
if [ -d "$demo" ]; then cleanup; rm -rf "$demo"; fi
mkdir -p "$mnt"
export COFFER_KEYSTORE="$demo/keystore"
export COFFER_PASSPHRASE_FILE="$demo/passphrase"
(umask 077; head -c 24 /dev/urandom | base64 > "$COFFER_PASSPHRASE_FILE")

echo "== coffer init (a 3072-bit RSA key pair takes a second or two)"
id=$("$coffer" init "$demo/store" --policy demo --copy primary)
echo "store id $id; keystore $COFFER_KEYSTORE; passphrase in $COFFER_PASSPHRASE_FILE"

echo "== coffer mount, then rsync -a $src in"
"$coffer" mount "$demo/store" "$mnt" --log "$demo/mount.log"
start=$(date +%s%N)
rsync -a "$src/" "$mnt/doc/"
sync
end=$(date +%s%N)
files=$(find "$mnt/doc" -type f | wc -l)
bytes=$(find "$mnt/doc" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
echo "backed up $files files, $bytes bytes in $(( (end - start) / 1000000 )) ms"

echo "== what the store holds (ciphertext only)"
ls -la "$demo/store"
echo "-- data/ (encrypted names):"
find "$demo/store/data" -maxdepth 2 | sed -n 2,7p
f=$(find "$demo/store/data" -type f ! -name '.*' -size +1k -print -quit)
echo "-- first bytes of one ciphertext file ($(stat -c %s "$f") bytes):"
od -A d -t x1 -N 64 "$f"

echo "== unmount, remount, compare every byte with diff -r"
"$coffer" umount "$mnt"
"$coffer" mount "$demo/store" "$mnt" --read-only --log "$demo/mount.log"
if diff -r --no-dereference "$src" "$mnt/doc" >/dev/null; then same=yes; else same=NO; fi
"$coffer" umount "$mnt"

echo "== coffer fsck"
"$coffer" fsck "$demo/store"
echo "== coffer info"
"$coffer" info "$demo/store"

echo
echo "summary: $files files, $bytes bytes backed up; identical after remount: $same; nothing left mounted: $(grep -q " $mnt " /proc/self/mountinfo && echo NO || echo yes)"
[ "$same" = yes ]
