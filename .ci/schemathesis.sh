#!/usr/bin/env bash
# schemathesis (PyPI) against the app API's OpenAPI document, served by `wxpay serve` in sandbox
# mode (temporary SQLite, the in-process WeChat Pay sandbox, API key sk_test_change_me): every
# operation is fuzzed from the spec, and the stateful phase follows the spec's links
# (create order → get / pay / hint / refund). Any 5xx, any answer outside the documented
# statuses or schemas, any schema-violating request accepted, fails the run.
# .ci/schemathesis.toml says which statuses count as "accepted" for schema-valid data.
# Installs schemathesis when missing; builds the debug binary when missing. Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\n==> %s\n' "$*"; }

if ! command -v st >/dev/null 2>&1; then
  log "installing schemathesis (pip)"
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4.3,<5'
fi
st --version

[ -x target/debug/wxpay ] || cargo build -p wxpay
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

log "wxpay serve (sandbox mode) on 127.0.0.1:$port"
(cd "$work" && WXPAY_LISTEN="127.0.0.1:$port" WXPAY_DATABASE_URL="sqlite://$work/wxpay.db" \
  RUST_LOG=warn exec "$root/target/debug/wxpay" serve >"$work/serve.log" 2>&1) &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$work/serve.log"; echo "FATAL: server not ready" >&2; exit 1; }

log "schemathesis run"
cd "$work"
status=0
st --no-color --config-file "$root/.ci/schemathesis.toml" run "http://127.0.0.1:$port/openapi.json" \
  -H 'Authorization: Bearer sk_test_change_me' \
  --max-examples 150 --seed 20261127 || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (tail) ---"
  tail -n 50 "$work/serve.log"
fi
exit "$status"
