#!/usr/bin/env bash
# Redis for the shared-store tests: use the machine's if one answers on 127.0.0.1:6379, else
# install (Debian's package) and start one without persistence.
set -euo pipefail

answers() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }

if ! answers; then
  if ! command -v redis-server >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null
  fi
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do answers && break; sleep 0.1; done
  answers || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
fi
