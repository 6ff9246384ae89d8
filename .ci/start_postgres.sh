#!/usr/bin/env bash
# PostgreSQL for the tests of the PostgreSQL stores (TRELLIS_TEST_DATABASE_URL): use the
# machine's server if one answers on 127.0.0.1:5432, else install (Debian's package) and start
# one; then make sure the test role and database exist. Each test works in a schema of its own
# (tests/conftest.py), so parallel runs on one database never meet.
set -euo pipefail

ROLE=trellis
DB=trellis_test

answers() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

if ! answers; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null
  fi
  version=$(ls /usr/lib/postgresql | sort -V | tail -1)
  if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    pg_createcluster "$version" main >/dev/null
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  for _ in $(seq 100); do answers && break; sleep 0.1; done
  answers || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
fi

# As the server's superuser, over its local socket (peer auth) or loopback (trust).
as_admin() {
  if id postgres >/dev/null 2>&1 && command -v runuser >/dev/null; then
    runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt "$@"
  else
    psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt "$@"
  fi
}

if [ "$(as_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'")" != "1" ]; then
  as_admin -c "CREATE ROLE $ROLE LOGIN PASSWORD '$ROLE'"
fi
if [ "$(as_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
  as_admin -c "CREATE DATABASE $DB OWNER $ROLE"
fi
