#!/usr/bin/env bash
# Headless Chromium end-to-end test of the admin console (/admin). Installs what it needs when
# missing (Debian's chromium, Node.js and npm; playwright-core from npm into target/), builds the
# wxpay binary, and runs .ci/browser-test.cjs: a paid order through the API and the sandbox, log
# in, find the order, open its timeline, redeliver its webhook, screenshot (target/console.png).
# Idempotent; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} (apt)"
  apt_install "${missing[@]}"
fi
# A font, so that the screenshot has readable text (the checks do not need it).
if ! fc-list 2>/dev/null | grep -q .; then
  log "installing a font (apt)"
  apt_install fontconfig fonts-dejavu-core || echo "note: no font could be installed; continuing"
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  echo "FATAL: Node.js >= 18 is needed (found $(node --version))" >&2
  exit 1
fi

pw_dir=target/browser-test
if [ ! -f "$pw_dir/node_modules/playwright-core/package.json" ]; then
  log "installing playwright-core (npm) into $pw_dir"
  mkdir -p "$pw_dir"
  [ -f "$pw_dir/package.json" ] || echo '{"name":"wxpay-browser-test","private":true}' >"$pw_dir/package.json"
  (cd "$pw_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error playwright-core@1)
fi

log "building wxpay"
cargo build -p wxpay

log "browser test (Chromium $(/usr/bin/chromium --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -n 1))"
PLAYWRIGHT_CORE_DIR="$PWD/$pw_dir/node_modules/playwright-core" \
  WXPAY_BIN="$PWD/target/debug/wxpay" \
  node .ci/browser-test.cjs
