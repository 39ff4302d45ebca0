# shellcheck shell=bash
# Shared by scripts/deploy-*.sh: logging, the dry-run switch, prerequisite checks and
# waiting. Sourced, never run. The caller sets `tool` (its name, for messages) and
# `dry_run` (0 or 1) before calling anything here.
#
# Rule for --dry-run: read-only queries (docker info, docker inspect, nvidia-smi, kubectl
# get) still run so the plan is accurate; every command that changes state goes through
# `mutate`, which only prints it. A prerequisite that is missing is reported and, in a
# dry run, does not stop the plan.

tool="${tool:-deploy}"
dry_run="${dry_run:-0}"

log() { printf '%s: %s\n' "$tool" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Option checks shared by the scripts' argument parsing.
check_ports() {
  local port
  for port in "$@"; do
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
      die "'$port' is not a port number"
    fi
  done
}
check_seconds() { # VALUE OPTION
  [[ "$1" =~ ^[0-9]+$ ]] || die "$2 '$1' is not a number of seconds"
}

# A missing prerequisite: fatal in a real run, reported in a dry run. The caller reads
# `missing` at the end of a dry run.
# shellcheck disable=SC2034
missing=0
need() {
  if ((dry_run)); then
    log "missing prerequisite (a real run stops here): $*"
    # shellcheck disable=SC2034
    missing=1
  else
    die "$*"
  fi
}

# Prints a command the way a shell would read it back.
show_cmd() {
  local out="" arg
  for arg in "$@"; do
    out+="$(printf '%q' "$arg") "
  done
  printf '%s\n' "${out% }"
}

# Runs a command that changes state; a dry run prints it instead.
mutate() {
  if ((dry_run)); then
    printf 'would run: %s\n' "$(show_cmd "$@")" >&2
    return 0
  fi
  log "running: $(show_cmd "$@")"
  "$@"
}

require_docker_gpu() {
  if ! command -v docker >/dev/null 2>&1; then
    need "docker is not installed (install Docker Engine: the docker CLI and daemon)"
    return 0
  fi
  if ! docker info >/dev/null 2>&1; then
    need "cannot reach the Docker daemon (is it running, and may this user use it? try: docker info)"
    return 0
  fi
  local runtimes
  runtimes="$(docker info --format '{{json .Runtimes}}' 2>/dev/null || true)"
  if [[ "$runtimes" != *nvidia* ]]; then
    need "the NVIDIA Container Toolkit is not configured for Docker (no 'nvidia' runtime in docker info; install nvidia-container-toolkit and run: nvidia-ctk runtime configure --runtime=docker, then restart docker)"
  fi
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    need "nvidia-smi is not installed (install the NVIDIA driver)"
  elif ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    need "no NVIDIA GPU found (nvidia-smi -L lists none)"
  fi
}

require_curl() {
  command -v curl >/dev/null 2>&1 || need "curl is not installed (used to wait for the server's health endpoint)"
}

# Prints "running", "stopped" or "absent" for a container name.
container_state() {
  local running
  if ! running="$(docker inspect --format '{{.State.Running}}' "$1" 2>/dev/null)"; then
    echo absent
  elif [[ "$running" == "true" ]]; then
    echo running
  else
    echo stopped
  fi
}

# The value of one label of a container (empty when absent).
container_label() {
  docker inspect --format "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# wait_http URL TIMEOUT_S CONTAINER: polls until URL answers 2xx; fails early when the
# container stops.
wait_http() {
  local url="$1" timeout="$2" container="$3" t0=$SECONDS
  log "waiting for $url (up to ${timeout}s; the first start downloads the model)"
  until curl -fsS -o /dev/null --max-time 5 "$url" 2>/dev/null; do
    if [[ "$(container_state "$container")" != running ]]; then
      log "container $container is not running; its last log lines:"
      docker logs --tail 30 "$container" >&2 2>&1 || true
      die "$container stopped before it was ready"
    fi
    if ((SECONDS - t0 >= timeout)); then
      die "$url not ready after ${timeout}s (container $container still running: docker logs -f $container)"
    fi
    sleep "${DEPLOY_POLL_S:-5}"
  done
  log "ready after $((SECONDS - t0))s: $url"
}
