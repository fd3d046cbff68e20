#!/usr/bin/env bash
# The test suite starts private redis-server and postgres processes; make sure the binaries
# exist, installing Debian's packages when we can (root with apt-get), else say what is missing.
set -euo pipefail
have_pg() {
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null
}
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
have_pg || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (test servers)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "missing test server binaries: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
exit 1
