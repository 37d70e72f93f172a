#!/usr/bin/env bash
# Installs what the browser build and tests need, from package registries
# only: Chromium and chromedriver from Debian, the wasm32 target from
# rustup, wasm-bindgen-cli and wasm-pack from crates.io, and playwright-core
# (for the page test) from npm.
#
# No binaryen: web/Cargo.toml turns wasm-opt off, because Debian 12's
# wasm-opt (binaryen 108) breaks what wasm-bindgen 0.2.130 emits.
# Each step is skipped when its tool is already there, so rerunning is cheap.
#
# Usage: web/setup.sh          (as root, or with sudo available for apt-get)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

step() { printf '\n== %s\n' "$*"; }

# Debian packages. Chromium brings SwiftShader, the CPU Vulkan driver that
# gives headless Chromium a WebGPU adapter on a machine without a GPU.
missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    sudo_if_needed apt-get update
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
    step "chromium, chromedriver and node already installed"
fi

if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    step "wasm32-unknown-unknown already installed"
else
    step "rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
fi

# The test runner and the bindings generator must match the wasm-bindgen
# crate in Cargo.lock exactly: a mismatch makes wasm-pack try to download
# one, which fails where only registries are reachable. No --locked: one of
# the CLI's locked dependencies is not on the registry.
want="$(awk '
    $0 == "name = \"wasm-bindgen\"" { hit = 1; next }
    hit && /^version = / { gsub(/"/, "", $3); print $3; exit }
' "$root/Cargo.lock")"
if [ -z "$want" ]; then
    echo "setup.sh: no wasm-bindgen entry in $root/Cargo.lock" >&2
    exit 1
fi
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" = "$want" ]; then
    step "wasm-bindgen-cli $want already installed"
else
    step "cargo install wasm-bindgen-cli --version $want (found: ${have:-none})"
    cargo install wasm-bindgen-cli --version "=$want" --force
fi

if command -v wasm-pack >/dev/null; then
    step "wasm-pack already installed ($(wasm-pack --version))"
else
    step "cargo install wasm-pack"
    cargo install wasm-pack
fi

# The page test drives Chromium with playwright-core, which downloads no
# browser: it uses Debian's. Exact versions come from package-lock.json.
if [ -d "$root/web/e2e/node_modules/playwright-core" ]; then
    step "playwright-core already installed"
else
    step "npm ci (web/e2e: playwright-core)"
    (cd "$root/web/e2e" && npm ci --no-audit --no-fund)
fi

step "done"
printf '  chromium      %s\n' "$(chromium --version 2>/dev/null || echo '?')"
printf '  chromedriver  %s\n' "$(chromedriver --version 2>/dev/null | head -n1 || echo '?')"
printf '  wasm-bindgen  %s\n' "$(wasm-bindgen --version)"
printf '  wasm-pack     %s\n' "$(wasm-pack --version)"
printf '  node          %s\n' "$(node --version)"
