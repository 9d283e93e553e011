#!/usr/bin/env bash
# Fuzz every input coffer reads from disk or from another host, with cargo-fuzz (libFuzzer,
# AddressSanitizer), each target for SECONDS (60 by default):
#
#   ciphertext_file block header name catalog_record export_file descriptor keystore
#   kms_response kms_config keyserver_http
#
#   tools/fuzz.sh [SECONDS] [TARGET...]
#
# Seeds (real headers, files, names, descriptors, keystores, exports and KMIP answers
# captured from PyKMIP) are in fuzz/seeds/TARGET; what a run learns is kept in
# fuzz/corpus/TARGET (libFuzzer adds only inputs that reach new code, so it stays small;
# `cargo fuzz cmin TARGET` shrinks it further, at the cost of a rebuild). A crash is saved under fuzz/artifacts/TARGET/; copy it to
# fuzz/regressions/TARGET/ once fixed: tests/fuzz_regressions.rs replays every file there,
# and every seed and corpus file, through the same entry point on each `cargo test`.
#
# cargo-fuzz needs nightly features; this stable toolchain provides them with
# RUSTC_BOOTSTRAP=1 (the only toolchain here). The first build takes about 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-60}"
shift || true
ALL=(ciphertext_file block header name catalog_record export_file descriptor keystore kms_response kms_config keyserver_http)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL[@]}"); fi

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -O

failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
  echo "fuzz: $t for ${SECS}s" >&2
  # -rss_limit_mb: a hostile input must not make coffer allocate without bound. -timeout
  # leaves room for the one-time set-up (an RSA key for the store fixture) under ASan.
  if ! cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$SECS" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
      2>"artifacts/$t/last-run.log"; then
    failed+=("$t")
    tail -n 30 "artifacts/$t/last-run.log" >&2
  else
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "artifacts/$t/last-run.log" | tail -n 2 >&2 || true
  fi
  # Keep only inputs that add coverage (libFuzzer's merge, with the binary just built), so
  # the corpus stays small enough for git.
  bin="target/x86_64-unknown-linux-gnu/release/$t"
  rm -rf "corpus/$t.min" && mkdir -p "corpus/$t.min"
  if "$bin" -merge=1 "corpus/$t.min" "corpus/$t" >/dev/null 2>&1; then
    rm -rf "corpus/$t" && mv "corpus/$t.min" "corpus/$t"
  else
    rm -rf "corpus/$t.min"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}; see fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} target(s), ${SECS}s each, no crash" >&2
