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

# A real KMIP server on loopback for the kms provider's tests (tests/kms.rs), stopped however
# this script ends.
trap 'bash tools/kms-dev.sh stop' EXIT
COFFER_TEST_KMS_CONFIG="$(bash tools/kms-dev.sh start | tail -n 1)"
export COFFER_TEST_KMS_CONFIG
# Each benchmark once (divan's test mode), so benches/ keeps compiling and running.
cargo test --benches --locked
cargo test --lib --bins --tests --locked -- --test-threads="${COFFER_TEST_THREADS:-4}"
# A short crash test: SIGKILL of the daemon under a random writer, 10 rounds
# (tools/crashtest.sh runs 100 by default).
bash tools/crashtest.sh "${COFFER_CRASH_ROUNDS:-10}"
