#!/usr/bin/env bash
# Build the Debian package: target/debian/coffer_VERSION-1_ARCH.deb, with cargo-deb
# (installed into ~/.cargo/bin on first use). It holds the binary, the mount helper
# /usr/sbin/mount.coffer, man pages and bash, zsh and fish completions generated from the
# clap definitions (`coffer generate`), the systemd units from dist/systemd, and the docs.
#   tools/package.sh            build it; prints the .deb's path
#   dpkg -i target/debian/coffer_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo-deb >/dev/null; then
  echo "installing cargo-deb (once)" >&2
  cargo install cargo-deb --locked --quiet --version '^3'
fi
cargo build --release --locked --quiet
out=target/package
rm -rf "$out"; mkdir -p "$out/man" "$out/completions"
target/release/coffer generate man "$out/man"
gzip -9n "$out"/man/*.1
target/release/coffer generate completions bash > "$out/completions/coffer"
target/release/coffer generate completions zsh > "$out/completions/_coffer"
target/release/coffer generate completions fish > "$out/completions/coffer.fish"
rm -f target/debian/coffer_*.deb
cargo deb --no-build --locked --quiet --strip >&2
ls target/debian/coffer_*.deb
