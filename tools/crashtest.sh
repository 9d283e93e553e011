#!/usr/bin/env bash
# Crash test: N rounds (default 100) of
#   1. a writer in the mount (tools/crash-writer.py) creating, writing at random offsets,
#      truncating, renaming and fsyncing, logging each step outside the mount;
#   2. SIGKILL of the mount daemon at a random moment, then a remount;
#   3. every file fsynced before the kill must match the log byte for byte, and every other
#      file must read or fail with EIO, which fsck must then report;
#   4. `coffer fsck --repair`, after which fsck finds zero problems.
# One store across all rounds, each round in a directory of its own, so damage from one
# round that fsck missed would show in the next.
#
#   tools/crashtest.sh [N]          COFFER_BIN=path picks the binary (default: target/debug);
#                                   CRASH_SHOW=1 prints what fsck found after each kill
#
# Exit 0 when every round passed; otherwise 1, naming the round and its seed
# (CRASH_SEED=S tools/crashtest.sh 1 replays a round's writer). Its temporary directory is
# named coffer-test-*, so tools/test.sh clears a mount an interrupted run left behind: do not
# run the two side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-100}"
if [ -z "${COFFER_BIN:-}" ]; then
  cargo build --quiet --bin coffer
  COFFER_BIN="$PWD/target/debug/coffer"
fi
WORK="$(mktemp -d /tmp/coffer-test-crash.XXXXXX)"
export COFFER_KEYSTORE="$WORK/keystore" COFFER_PASSPHRASE_FILE="$WORK/pass"
echo "crash test passphrase" >"$COFFER_PASSPHRASE_FILE"
STORE="$WORK/store" MNT="$WORK/mnt"
mkdir -p "$MNT"

cleanup() {
  if grep -qs " $MNT " /proc/self/mountinfo; then
    "$COFFER_BIN" umount "$MNT" >/dev/null 2>&1 || fusermount3 -uz "$MNT" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { echo "crashtest: $*" >&2; }
fail() { say "round $round (seed $seed): $*"; exit 1; }

"$COFFER_BIN" init "$STORE" --rsa-bits 2048 >/dev/null
totals=(0 0 0)
for round in $(seq 1 "$ROUNDS"); do
  seed="${CRASH_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
  log="$WORK/round-$round.log"
  "$COFFER_BIN" mount "$STORE" "$MNT" --log "$WORK/mount.log" || fail "mount failed"
  pid="$(head -n 1 "$STORE/lock")"
  python3 tools/crash-writer.py write "$MNT/r$round" "$log" "$seed" 2>>"$WORK/writer.err" &
  writer=$!
  # Kill somewhere between 0.05 s and 1.5 s into the writer's work.
  sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.05 + (r % 146) / 100 }')"
  kill -9 "$pid"
  wait "$writer" || true
  for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.05; done
  # The dead mount is cleared by coffer, or lazily; it may be gone already.
  "$COFFER_BIN" umount "$MNT" >/dev/null 2>&1 || fusermount3 -uz "$MNT" 2>/dev/null || true
  if grep -qs " $MNT " /proc/self/mountinfo; then fail "the dead mount could not be cleared"; fi

  "$COFFER_BIN" mount "$STORE" "$MNT" --log "$WORK/mount.log" || fail "remount after the kill failed"
  verdict="$(python3 tools/crash-writer.py check "$MNT/r$round" "$log")" || {
    "$COFFER_BIN" umount "$MNT" || true
    fail "fsynced data did not survive: $verdict"
  }
  "$COFFER_BIN" umount "$MNT" || fail "umount failed"
  read -r _ synced _ dirty _ unreadable <<<"$verdict"
  set +e
  check="$("$COFFER_BIN" fsck "$STORE" 2>&1)"
  code=$?
  set -e
  if [ "$unreadable" -gt 0 ] && [ "$code" -ne 1 ]; then
    fail "$unreadable file(s) failed with EIO, but fsck reported no problem: $check"
  fi
  [ "$code" -le 1 ] || fail "fsck failed: $check"
  [ -n "${CRASH_SHOW:-}" ] && [ "$code" -ne 0 ] && say "fsck said: $check"
  if [ "$code" -eq 1 ]; then
    "$COFFER_BIN" fsck "$STORE" --repair >/dev/null || true
    after="$("$COFFER_BIN" fsck "$STORE" 2>&1)" || fail "problems left after fsck --repair: $after"
  fi
  totals=($((totals[0] + synced)) $((totals[1] + dirty)) $((totals[2] + unreadable)))
  say "round $round/$ROUNDS (seed $seed): $verdict; fsck exit $code"
done
say "$ROUNDS rounds passed: ${totals[0]} fsynced files intact, ${totals[1]} files in flight at a kill, ${totals[2]} of them unreadable and reported by fsck"
