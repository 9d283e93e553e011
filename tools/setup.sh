#!/usr/bin/env bash
# Install what coffer's demo and tests need on a Debian machine, if it is missing:
# fuse3 (fusermount3), rsync, python3 (the mmap test, and a virtual environment for the PyKMIP
# server of tools/kms-dev.sh), openssl (its certificates), attr, acl and libcap2-bin (the
# fidelity tests), fio (concurrent writers verified), systemd, man-db and dpkg-dev (the
# units, man pages and package), chromium and chromium-driver (the console's browser tests),
# and a Rust toolchain check.
# Sourced by tools/demo.sh and tools/test.sh; safe to run again.
set -euo pipefail

missing=()
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v rsync >/dev/null 2>&1 || missing+=(rsync)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v diff >/dev/null 2>&1 || missing+=(diffutils)
# Extended attributes, ACLs and file capabilities, for the fidelity tests.
command -v getfattr >/dev/null 2>&1 || missing+=(attr)
command -v getfacl >/dev/null 2>&1 || missing+=(acl)
command -v setcap >/dev/null 2>&1 || missing+=(libcap2-bin)
# fio: concurrent writers checked with its own verify pass (tests/fio_verify.rs).
command -v fio >/dev/null 2>&1 || missing+=(fio)
# The admin tests: systemd-analyze verify of the units, and man for the packaged pages.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v man >/dev/null 2>&1 || missing+=(man-db)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
# The key-server console's browser tests: headless Chromium driven through WebDriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not installed; install Rust (https://rustup.rs) and run this again" >&2
  exit 2
fi
if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing and 'modprobe fuse' did not create it" >&2; exit 2; }
fi
