#!/usr/bin/env bash
# Make sure PostgreSQL, MariaDB and Redis answer on loopback; start any that is down.
# Exit 1 (naming the service) when one still does not answer.
set -u
answers() { python3 - "$1" "$2" <<'PY'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
except OSError:
    sys.exit(1)
PY
}
wait_for() {  # name port start-command...
  local name=$1 port=$2; shift 2
  if answers 127.0.0.1 "$port"; then echo "services: $name answers on 127.0.0.1:$port"; return 0; fi
  echo "services: $name is down, starting it"
  "$@" >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do
    if answers 127.0.0.1 "$port"; then echo "services: $name started"; return 0; fi
    sleep 1
  done
  echo "services: $name does not answer on 127.0.0.1:$port" >&2
  return 1
}
status=0
wait_for PostgreSQL 5432 sh -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start' || status=1
wait_for MariaDB 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || status=1
wait_for Redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || status=1
exit $status
