#!/usr/bin/env bash
# A real KMIP key management server for development, tests and the demo: PyKMIP 0.11 on
# loopback, with its own CA and ECDSA P-256 certificates (PyKMIP's TLS 1.2 suite offers no AEAD
# cipher with RSA certificates, and rustls then finds no shared cipher: ../docs/kms.md).
#
#   tools/kms-dev.sh start     install PyKMIP if needed, make certificates, start the server;
#                              the last line printed is the path of a kms.toml for it
#   tools/kms-dev.sh stop      stop it (SIGINT by PID: PyKMIP ignores SIGTERM for seconds,
#                              and SIGKILL orphans its children)
#   tools/kms-dev.sh status    say whether it runs; exit 0 when it does
#
# Everything lives under build/kms/ (ignored by git): COFFER_KMS_DIR moves it, COFFER_KMS_PORT
# changes the port (5696, the IANA port for KMIP), COFFER_KMS_VENV points at a PyKMIP install
# to share. Keys persist across restarts in its SQLite database; `rm -rf build/kms/data`
# forgets them.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${COFFER_KMS_DIR:-$PWD/build/kms}"
PORT="${COFFER_KMS_PORT:-5696}"
HOST=127.0.0.1
VENV="${COFFER_KMS_VENV:-$DIR/venv}"
PKI="$DIR/pki"
DATA="$DIR/data"
PIDFILE="$DIR/server.pid"
LOG="$DIR/server.log"
CONF="$DIR/server.conf"
TOML="$DIR/kms.toml"

say() { echo "kms-dev: $*" >&2; }

running() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

port_open() {
  (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

install_pykmip() {
  if [ -x "$VENV/bin/pykmip-server" ]; then
    return
  fi
  local missing=()
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  say "installing PyKMIP 0.11.0 into $VENV (about 20 s)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check pykmip==0.11.0 >&2
}

# An ECDSA P-256 key and a certificate signed by the CA; $3 is the extended key usage.
leaf() {
  local name="$1" cn="$2" eku="$3" san="${4:-}"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "/CN=$cn" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyAgreement"
    echo "extendedKeyUsage=$eku"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.pem" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
  chmod 600 "$PKI/$name.key"
}

make_pki() {
  [ -f "$PKI/client.pem" ] && return
  say "making a CA, a server certificate and a client certificate (ECDSA P-256) in $PKI"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
  chmod 600 "$PKI/ca.key"
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=coffer development KMS CA" -days 825 \
    -sha256 -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$PKI/ca.pem" 2>/dev/null
  leaf server "localhost" serverAuth "DNS:localhost,IP:127.0.0.1"
  # The client certificate's CN owns the keys it creates (PyKMIP's default policy).
  leaf client "coffer" clientAuth
}

write_configs() {
  mkdir -p "$DATA/policies"
  chmod 700 "$DATA"
  cat >"$CONF" <<EOF
[server]
hostname=$HOST
port=$PORT
certificate_path=$PKI/server.pem
key_path=$PKI/server.key
ca_path=$PKI/ca.pem
auth_suite=TLS1.2
enable_tls_client_auth=True
policy_path=$DATA/policies
database_path=$DATA/pykmip.sqlite
logging_level=INFO
EOF
  umask 077
  cat >"$TOML" <<EOF
# A KMS provider configuration for coffer (docs/kms.md), written by tools/kms-dev.sh for the
# development server it started.
host = "$HOST"
port = $PORT
ca = "$PKI/ca.pem"
cert = "$PKI/client.pem"
key = "$PKI/client.key"
timeout = "10s"
EOF
}

start() {
  mkdir -p "$DIR"
  if running; then
    say "already running (pid $(cat "$PIDFILE")) on $HOST:$PORT"
    echo "$TOML"
    return
  fi
  if port_open; then
    say "something else listens on $HOST:$PORT; stop it or set COFFER_KMS_PORT"
    exit 2
  fi
  install_pykmip
  make_pki
  write_configs
  : >"$LOG"
  # Its own session, so that a stop can reach its children too.
  setsid "$VENV/bin/pykmip-server" -f "$CONF" -l "$LOG" >>"$DIR/server.out" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 300); do
    if port_open; then
      say "PyKMIP serves on $HOST:$PORT (pid $(cat "$PIDFILE")); log $LOG"
      echo "$TOML"
      return
    fi
    if ! running; then
      say "the server exited at start; last lines of its output:"
      tail -n 20 "$DIR/server.out" "$LOG" >&2 || true
      rm -f "$PIDFILE"
      exit 2
    fi
    sleep 0.1
  done
  say "the server did not listen on $HOST:$PORT within 30 s"
  stop
  exit 2
}

stop() {
  if ! running; then
    rm -f "$PIDFILE"
    say "not running"
    return
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid did not stop on SIGINT within 10 s; killing its process group"
    kill -INT -- "-$pid" 2>/dev/null || true
    sleep 2
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  # PyKMIP's session workers share its process group; none may outlive it.
  pkill -INT -g "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  say "stopped"
}

status() {
  if running; then
    say "running (pid $(cat "$PIDFILE")) on $HOST:$PORT; configuration $TOML"
    return 0
  fi
  say "not running"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: tools/kms-dev.sh start|stop|status" >&2
    exit 2
    ;;
esac
