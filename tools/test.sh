#!/usr/bin/env bash
# Run every test of coffer: unit, property and mount-level integration tests, and the
# benchmarks in test mode (each once, so they keep compiling and running).
# On a fresh Debian machine this first installs what the tests need (tools/setup.sh), and
# PyKMIP into build/kms/ for the KMS tests (tools/kms-dev.sh).
# Mount tests need root (or a user allowed to mount FUSE) and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

# No stale mount from an earlier, interrupted run may survive into this one.
for m in $(awk '$0 ~ / - fuse/ && $5 ~ /coffer-test-/ {print $5}' /proc/self/mountinfo); do
  fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
done

cargo build --all-targets --locked

# coffer serves over FUSE's io_uring when the kernel offers it, so the suite runs that way
# (tests/io_uring.rs also mounts through /dev/fuse, both ways). The kernel offers it only with
# the fuse module's enable_uring parameter set; this sets it for the run and puts it back.
. tools/fuse-uring.sh
if uring_on; then
  echo "tools/test.sh: FUSE over io_uring on for this run (was $URING_WAS)"
else
  echo "tools/test.sh: WARNING: no $URING_PARAM here (a kernel before 6.14, or without CONFIG_FUSE_IO_URING);" \
    "mounts serve through /dev/fuse, and tests/io_uring.rs will fail" >&2
fi
trap 'bash tools/kms-dev.sh stop; uring_restore' EXIT

# A real KMIP server on loopback for the kms provider's tests (tests/kms.rs), stopped however
# this script ends.
COFFER_TEST_KMS_CONFIG="$(bash tools/kms-dev.sh start | tail -n 1)"
export COFFER_TEST_KMS_CONFIG
# Each benchmark once (divan's test mode), so benches/ keeps compiling and running.
cargo test --benches --locked
cargo test --lib --bins --tests --locked -- --test-threads="${COFFER_TEST_THREADS:-4}"
# The Debian package built, installed on this machine, used and removed (docs/admin.md).
bash tests/package.sh
# A short crash test: SIGKILL of the daemon under a random writer, 10 rounds
# (tools/crashtest.sh runs 100 by default).
bash tools/crashtest.sh "${COFFER_CRASH_ROUNDS:-10}"
