#!/usr/bin/env bash
# Runs the pinned Deno, installing it from the npm registry into .tools/ on first use.
# Usage: .ci/deno.sh <deno arguments...>   (e.g. .ci/deno.sh task test)
set -euo pipefail
DENO_VERSION=2.9.6
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$root/.tools/node_modules/.bin/deno"
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q "^deno $DENO_VERSION "; then
  mkdir -p "$root/.tools"
  (cd "$root/.tools" && npm install --no-save --no-audit --no-fund --loglevel=error "deno@$DENO_VERSION" >&2)
fi
exec "$bin" "$@"
