# Sourced by scripts/quickstart, scripts/test and .ci/run: makes sure RabbitMQ, Redis and
# the Python environment are there, installing and starting whatever is missing.
# shellcheck shell=bash

FERRY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FERRY_VENV=${FERRY_VENV:-$FERRY_ROOT/.venv}

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds what
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    port_open "$1" && return 0
    sleep 0.1
  done
  echo "error: $3 did not open port $1 within $2 s" >&2
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "error: $* missing and not root: install it (apt-get install $*) and run again" >&2
    return 1
  fi
  if [ -z "${FERRY_APT_UPDATED:-}" ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    FERRY_APT_UPDATED=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_redis() {
  port_open 6379 && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  say "starting Redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >&2
  wait_port 6379 30 redis-server
}

ensure_rabbitmq() {
  if ! port_open 5672; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    say "starting RabbitMQ on 127.0.0.1:5672"
    rabbitmq-server -detached >&2 || true
    wait_port 5672 120 rabbitmq-server
  fi
  # Its management API (it ships with RabbitMQ): the web-service makes each endpoint a
  # broker user of its own through it (FERRY_AMQP_ADMIN_URL).
  port_open 15672 && return 0
  say "enabling RabbitMQ's management API on 127.0.0.1:15672"
  rabbitmq-plugins enable rabbitmq_management >&2
  wait_port 15672 120 "RabbitMQ's management plugin"
}

ensure_python() {
  if [ ! -x "$FERRY_VENV/bin/python" ]; then
    say "creating the Python environment in $FERRY_VENV"
    if ! python3 -m venv "$FERRY_VENV" >&2 2>/dev/null; then
      rm -rf "$FERRY_VENV"
      apt_install python3-venv python3-pip
      python3 -m venv "$FERRY_VENV" >&2
    fi
  fi
  local stamp="$FERRY_VENV/.ferry-sdk-installed"
  if [ ! -f "$stamp" ] || [ -n "$(find "$FERRY_ROOT/sdk/pyproject.toml" -newer "$stamp" 2>/dev/null)" ]; then
    say "installing the ferry SDK (editable) and test tools"
    "$FERRY_VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$FERRY_ROOT/sdk[test]" >&2
    touch "$stamp"
  fi
  export FERRY_PYTHON="$FERRY_VENV/bin/python"
  export FERRY_TEST_PYTHON="$FERRY_VENV/bin/python"
}

ensure_all() {
  ensure_redis
  ensure_rabbitmq
  ensure_python
  command -v cargo >/dev/null || { echo "error: cargo not found: install Rust (rustup) first" >&2; return 1; }
}

# Chromium (Debian's) and Node.js with playwright-core (tests/ui), for the dashboard's
# browser test.
ensure_browser() {
  [ -x /usr/bin/chromium ] || apt_install chromium
  command -v npm >/dev/null || apt_install nodejs npm
  if [ ! -d "$FERRY_ROOT/tests/ui/node_modules/playwright-core" ]; then
    say "installing playwright-core (tests/ui)"
    (cd "$FERRY_ROOT/tests/ui" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}

target_dir() {
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then echo "$CARGO_TARGET_DIR"; else echo "$FERRY_ROOT/target"; fi
}
