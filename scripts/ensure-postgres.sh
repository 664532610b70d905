#!/usr/bin/env bash
# Start the machine's PostgreSQL cluster if it is not accepting connections (tests need it).
set -euo pipefail
host=127.0.0.1
if pg_isready -q -h "$host" -p 5432; then
    exit 0
fi
if ! command -v pg_ctlcluster >/dev/null; then
    echo "PostgreSQL is not running on $host:5432 and pg_ctlcluster is not installed" >&2
    exit 1
fi
version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "starting PostgreSQL $version" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 30); do
    pg_isready -q -h "$host" -p 5432 && exit 0
    sleep 1
done
echo "PostgreSQL did not come up on $host:5432" >&2
exit 1
