#!/usr/bin/env bash
# The test suite starts private redis-server, postgres and prometheus processes, runs promtool,
# and runs archivers with a skewed clock through libfaketime (Debian's faketime package, for
# the clock_skew fault scenario); make sure they exist, installing Debian's packages when we
# can (root with apt-get), else say what is missing.
set -euo pipefail
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
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
have_pg || missing+=(postgresql)
have_prometheus || missing+=(prometheus)
have_faketime || missing+=(faketime)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (test servers and tools)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The tests start their own servers on free ports: stop any service a package started
  # (prometheus on 9090 where an init system is running).
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl stop prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
  exit 0
fi
echo "missing test binaries: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
exit 1
