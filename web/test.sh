#!/usr/bin/env bash
# Runs every browser test of wgpu-gradclip, in headless Chromium with
# WebGPU (SwiftShader where there is no GPU):
#   1. the wasm-bindgen-test suites in web/tests/ (clipping correctness
#      against the f64 reference, and a short training run);
#   2. wasm-pack build of the page, then the end-to-end page test.
# Install the tools first with web/setup.sh.
#
# Usage: web/test.sh [--unit-only | --page-only]
set -euo pipefail

web="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$web/.." && pwd)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

unit=1
page=1
case "${1:-}" in
    --unit-only) page=0 ;;
    --page-only) unit=0 ;;
    "") ;;
    *) echo "usage: $0 [--unit-only | --page-only]" >&2; exit 2 ;;
esac

for tool in chromium chromedriver wasm-bindgen wasm-bindgen-test-runner wasm-pack node npm; do
    command -v "$tool" >/dev/null || { echo "test.sh: $tool not found; run web/setup.sh" >&2; exit 1; }
done

# The CLI must match the wasm-bindgen crate this build links, exactly.
locked() {
    awk '$0 == "name = \"wasm-bindgen\"" { hit = 1; next }
         hit && /^version = / { gsub(/"/, "", $3); print $3; exit }' "$1"
}
cli="$(wasm-bindgen --version | awk '{print $2}')"
for lock in "$root/Cargo.lock" "$web/Cargo.lock"; do
    if [ -f "$lock" ] && [ "$(locked "$lock")" != "$cli" ]; then
        echo "test.sh: $lock has wasm-bindgen $(locked "$lock"), the CLI is $cli." >&2
        echo "         Make web/Cargo.toml pin the version in Cargo.lock, then rerun web/setup.sh." >&2
        exit 1
    fi
done

# wasm-bindgen-test drives Chromium through chromedriver. The flags give
# headless Chromium a WebGPU adapter without a GPU (SwiftShader); without
# --enable-unsafe-webgpu, requestAdapter() returns null and every GPU test
# fails.
caps="$(mktemp --suffix=.json)"
trap 'rm -f "$caps"' EXIT
cat > "$caps" <<'JSON'
{"goog:chromeOptions": {"args": ["--no-sandbox", "--enable-unsafe-webgpu",
  "--enable-features=Vulkan", "--use-vulkan=native", "--disable-gpu-sandbox",
  "--ignore-gpu-blocklist", "--disable-background-networking",
  "--disable-component-update", "--no-first-run"]}}
JSON
export WASM_BINDGEN_TEST_WEBDRIVER_JSON="$caps"
export CHROMEDRIVER="${CHROMEDRIVER:-$(command -v chromedriver)}"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
# The whole suite runs in one page; SwiftShader is slow, so allow minutes.
export WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-900}"

# The page and the training test need the library's toy model.
features=(--features toy)

# Both parts run even when the first fails, so one CI log shows everything.
failed=()
cd "$web"
if [ "$unit" = 1 ]; then
    echo "== wasm-bindgen-test in headless Chromium"
    # Release: the f64 reference walks tens of millions of elements in wasm.
    cargo test --release --target wasm32-unknown-unknown "${features[@]}" || failed+=("wasm-bindgen-test")
fi

if [ "$page" = 1 ]; then
    echo "== wasm-pack build web --target web ${features[*]}"
    if (cd "$root" && wasm-pack build web --target web ${features[@]:+-- "${features[@]}"}); then
        echo "== end-to-end page test"
        (cd "$web/e2e" && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund; } \
            && node page_test.mjs) || failed+=("page test")
    else
        failed+=("wasm-pack build")
    fi
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "test.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all browser tests passed"
