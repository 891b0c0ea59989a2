#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as real parts, when they are missing:
#   pgbouncer  - the transaction-mode pooler the pooled-deployment tests run the service behind
#   iproute2   - `ip netns` and veth pairs for the tests of workers on several hosts
#   chromium   - the browser Playwright drives in the tests of the studio and the dashboard
#   prometheus - its promtool, which checks the alert rules in docs/prometheus and the /metrics pages
#   pg-auto-failover-cli, postgresql-15-auto-failover
#              - `pg_autoctl` and its Postgres extension: the HA cluster (a monitor, a primary and
#                a synchronous standby) the failover tests start and fail over
# Only as root (CI and the development machines are); otherwise it says what is missing, and
# the tests that need it skip saying why.
set -euo pipefail

declare -A PACKAGE_OF=(
    [pgbouncer]=pgbouncer
    [ip]=iproute2
    [chromium]=chromium
    [promtool]=prometheus
    [pg_autoctl]=pg-auto-failover-cli
)
declare -A PATH_OF=(
    [pgbouncer]=/usr/sbin/pgbouncer
    [ip]=/usr/sbin/ip
    [chromium]=/usr/bin/chromium
    [promtool]=/usr/bin/promtool
    [pg_autoctl]=/usr/bin/pg_autoctl
)

missing=()
for command in "${!PACKAGE_OF[@]}"; do
    if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "${PATH_OF[$command]}" ]; then
        missing+=("${PACKAGE_OF[$command]}")
    fi
done
# pg_autoctl's Postgres extension (the monitor's) is a file, not a command.
if [ ! -f /usr/share/postgresql/15/extension/pgautofailover.control ]; then
    missing+=(postgresql-15-auto-failover)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing Debian packages: ${missing[*]} (not root or no apt-get: not" \
        "installing; the tests that need them skip)" >&2
    exit 0
fi
echo "system-deps: installing Debian packages for the tests: ${missing[*]}"
# The pg_auto_failover extension pulls in postgresql-15 where it is missing, whose install
# creates and may start a cluster "15 main" on :5432; the failover tests start their own.
had_main_cluster=$([ -d /etc/postgresql/15/main ] && echo yes || echo no)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: the packages' own services are not wanted, only their binaries.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's pgbouncer package starts a system pooler on :6432; the tests start their own.
if [[ " ${missing[*]} " == *" pgbouncer "* ]]; then
    (service pgbouncer stop || true) >/dev/null 2>&1
fi
# Likewise Debian's prometheus package may start a server on :9090; the tests only run promtool.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    (service prometheus stop || true) >/dev/null 2>&1
fi
if [ "$had_main_cluster" = no ] && [ -d /etc/postgresql/15/main ]; then
    (pg_ctlcluster 15 main stop || true) >/dev/null 2>&1
fi
echo "system-deps: installed ${missing[*]}"
