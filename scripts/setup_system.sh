#!/usr/bin/env bash
# Install what the store, server and web tests need beyond Python, quietly and only when
# missing: Debian's chromium (driven by Playwright through its executable path; never
# `playwright install`) and PostgreSQL (the tests start their own throwaway cluster), then
# `npm ci` and the build of web/ into web/dist (rebuilt only when a source is newer); and
# EGL with Mesa's software OpenGL (llvmpipe) for the headless rasteriser (render/gl.py, moderngl).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
for pkg in libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libgbm1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup_system: installing ${need[*]}"
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

cd web
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
if [ ! -f dist/assets/annotate.js ] || [ -n "$(find src package-lock.json build.mjs tsconfig.json -newer dist/assets/annotate.js 2>/dev/null | head -1)" ]; then
  npm run --silent build
fi
