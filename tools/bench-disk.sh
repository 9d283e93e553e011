# Sourced by the benchmarks: the disk they run on. By default a fresh ext4 with mkfs.ext4's
# defaults (a journal, as a backup disk has one) in a sparse image under ${TMPDIR:-/var/tmp},
# on a loop device with direct I/O (no second page cache under the first); with
# COFFER_BENCH_DIR=DIR, in DIR as it is.
#
# Why not the machine's own disk: the reference machine's root filesystem is ext4 without a
# journal. There ext4 does not reuse an inode freed in the last 5 s (300 s while its inode
# table block is dirty) and scans past each such inode at every create (find_inode_bit,
# recently_deleted), so the tree one system deleted made the next system's creates slower, by
# its place in the run: rsync of /usr/share/doc into a plain directory took 2.5-3.8 s there
# after earlier rounds, 0.5-0.6 s on a fresh journaled ext4, and the creating daemon's time
# was a quarter ext4's inode scan.
#
#   bench_disk_up    sets BENCH_BASE, where the run makes its work directory
#   bench_disk_down  unmounts and removes the image (safe to call twice)
bench_disk_up() {
  BENCH_IMG=""; BENCH_MNT=""; BENCH_LOOP=""
  if [ -n "${COFFER_BENCH_DIR:-}" ]; then
    BENCH_BASE=$COFFER_BENCH_DIR; BENCH_DISK="$COFFER_BENCH_DIR as it is"; return
  fi
  BENCH_IMG=$(mktemp "${TMPDIR:-/var/tmp}/coffer-bench-disk.XXXXXX")
  truncate -s "${COFFER_BENCH_DISK_SIZE:-24G}" "$BENCH_IMG"
  mkfs.ext4 -q -F "$BENCH_IMG"
  BENCH_LOOP=$(losetup --find --show --direct-io=on "$BENCH_IMG")
  BENCH_MNT=$(mktemp -d /tmp/coffer-bench-mnt.XXXXXX)
  mount "$BENCH_LOOP" "$BENCH_MNT"
  BENCH_BASE=$BENCH_MNT
  BENCH_DISK="a fresh journaled ext4 (mkfs.ext4 defaults, loop device, direct I/O)"
}
bench_disk_down() {
  [ -n "${BENCH_MNT:-}" ] && { umount "$BENCH_MNT" 2>/dev/null || umount -l "$BENCH_MNT"; rmdir "$BENCH_MNT"; }
  [ -n "${BENCH_LOOP:-}" ] && losetup -d "$BENCH_LOOP" 2>/dev/null
  [ -n "${BENCH_IMG:-}" ] && rm -f "$BENCH_IMG"
  BENCH_MNT=""; BENCH_LOOP=""; BENCH_IMG=""
}
