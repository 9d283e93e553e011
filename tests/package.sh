#!/usr/bin/env bash
# The Debian package as an administrator meets it (docs/admin.md): built by tools/package.sh,
# installed with apt-get on this machine, then man pages, completions, units, `coffer init`,
# `mount -t coffer` (through /usr/sbin/mount.coffer), a round trip, `umount`; and
# `apt-get remove` and `purge` leave stores and keystores as they were. Run by tools/test.sh, as root.
# It purges the package again however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "tests/package.sh: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs the package)"
dpkg-query -W -f='${Status}' coffer 2>/dev/null | grep -q ' installed' && fail "a coffer package is installed already; remove it first"

deb=$(bash tools/package.sh | tail -n 1)
work=$(mktemp -d /tmp/coffer-test-pkg.XXXXXX)
cleanup() {
  umount "$work/mnt" 2>/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq coffer >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null

[ "$(command -v coffer)" = /usr/bin/coffer ] || fail "coffer is not /usr/bin/coffer"
[ -x /usr/sbin/mount.coffer ] || fail "no mount helper /usr/sbin/mount.coffer"
man -w coffer >/dev/null && man -w coffer-mount >/dev/null && man -w coffer-keys-export >/dev/null \
  || fail "man pages missing: $(dpkg -L coffer | grep man1 | head -3)"
zcat "$(man -w coffer-backup)" | grep -q -- 'exclude\\-from' || fail "coffer-backup(1) lacks --exclude-from"
bash -c '. /usr/share/bash-completion/completions/coffer && complete -p coffer' >/dev/null \
  || fail "bash completion does not load"
[ -s /usr/share/zsh/vendor-completions/_coffer ] || fail "no zsh completion"
[ -s /usr/share/fish/vendor_completions.d/coffer.fish ] || fail "no fish completion"
# The key-server guide and the console screenshots it shows.
for img in $(grep -o 'img/console-[a-z-]*\.png' docs/keyserver.md | sort -u); do
  [ -s "/usr/share/doc/coffer/$img" ] || fail "/usr/share/doc/coffer/$img missing (docs/keyserver.md shows it)"
done
for u in coffer-mount@mnt-backup.service coffer-keyserver.service coffer-kms-sync@srv-store.service coffer-kms-sync@srv-store.timer; do
  out=$(systemd-analyze verify "/lib/systemd/system/$u" 2>&1) || fail "$u: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $u: $out"
done

printf 'package test passphrase\n' > "$work/pass"; chmod 600 "$work/pass"
mkdir "$work/mnt"
coffer init "$work/store" --keystore "$work/ks" --passphrase-file "$work/pass" --rsa-bits 2048 >/dev/null
opts="keystore=$work/ks,passphrase_file=$work/pass,log=$work/log"
mount -t coffer "$work/store" "$work/mnt" -o "$opts" || fail "mount -t coffer"
grep -q " $work/mnt .* - fuse.coffer " /proc/self/mountinfo || fail "not a fuse.coffer mount"
printf 'through the package' > "$work/mnt/f"
umount "$work/mnt"
for _ in $(seq 600); do [ -s "$work/store/lock" ] || break; sleep 0.1; done
[ -s "$work/store/lock" ] && fail "the daemon did not release the store after umount"
coffer mount "$work/store" "$work/mnt" --keystore "$work/ks" --passphrase-file "$work/pass" --log "$work/log"
[ "$(cat "$work/mnt/f")" = "through the package" ] || fail "round trip"
coffer umount "$work/mnt"

# Removing the package leaves stores, keystores and /var/lib/coffer as they were.
manifest() {
  local p there=()
  for p in "$@"; do [ -e "$p" ] && there+=("$p"); done
  find "${there[@]}" -type f -print0 | sort -z | xargs -0 -r sha256sum
}
before=$(manifest "$work/store" "$work/ks" /var/lib/coffer /etc/coffer)
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq coffer >/dev/null
[ ! -e /usr/bin/coffer ] || fail "/usr/bin/coffer is still there after remove"
[ "$(manifest "$work/store" "$work/ks" /var/lib/coffer /etc/coffer)" = "$before" ] \
  || fail "apt-get remove changed a store or keystore"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq coffer >/dev/null
[ "$(manifest "$work/store" "$work/ks" /var/lib/coffer /etc/coffer)" = "$before" ] \
  || fail "apt-get purge changed a store or keystore"
echo "tests/package.sh: ok ($(basename "$deb"))"
