#!/usr/bin/env bash
# Start an NVIDIA Riva ASR server (the Riva ASR NIM container, a Parakeet model) on this
# GPU host, wait until it is ready, and print the gateway's --backend URL on stdout.
#
# Usage: bash scripts/deploy-riva.sh [options]
#   --model NAME      a model of riva/deploy/riva-models.tsv (default parakeet-1-1b-ctc-en-us)
#   --profile SEL     NIM_TAGS_SELECTOR (default: the model's line in riva-models.tsv)
#   --image IMAGE     container image (default: the model's line)
#   --name NAME       container name (sgw-riva)
#   --grpc-port N     host gRPC port (50051)       --http-port N   host HTTP port (9000)
#   --gpus SPEC       docker --gpus value (device=0)
#   --cache-dir DIR   model cache on the host (~/.cache/nim)
#   --host HOST       host name in the printed URL (127.0.0.1)
#   --timeout S       readiness wait (1800)
#   --replace         remove a container of that name running another model or profile
#   --list-models     print the known models and exit
#   --dry-run         check prerequisites and print what would be done; change nothing
#
# Needs: Docker with the NVIDIA Container Toolkit, an NVIDIA GPU, curl, and NGC_API_KEY
# in the environment (an NGC personal key with NGC Catalog access). Defaults come from
# riva/deploy/riva.env; each has an environment variable of the same name.
#
# Idempotent: a container of that name already running the same model and profile is
# reused (only the readiness wait runs), a stopped one is started again, and the image is
# pulled (after a docker login to nvcr.io) only when it is not present.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
tool="deploy-riva"
dry_run=0
# shellcheck source=scripts/lib/deploy-common.sh
source "$repo_root/scripts/lib/deploy-common.sh"
# shellcheck source=riva/deploy/riva.env
source "$repo_root/riva/deploy/riva.env"
models_file="$repo_root/riva/deploy/riva-models.tsv"

usage() { sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

model="$RIVA_MODEL" profile="" image="" replace=0
name="$RIVA_CONTAINER" grpc_port="$RIVA_GRPC_PORT" http_port="$RIVA_HTTP_PORT"
gpus="$RIVA_GPUS" cache_dir="$RIVA_CACHE_DIR" host="$RIVA_PUBLIC_HOST" timeout="$RIVA_START_TIMEOUT"

while (($#)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --replace) replace=1 ;;
    --model) model="${2:?--model needs a value}"; shift ;;
    --profile) profile="${2:?--profile needs a value}"; shift ;;
    --image) image="${2:?--image needs a value}"; shift ;;
    --name) name="${2:?--name needs a value}"; shift ;;
    --grpc-port) grpc_port="${2:?--grpc-port needs a value}"; shift ;;
    --http-port) http_port="${2:?--http-port needs a value}"; shift ;;
    --gpus) gpus="${2:?--gpus needs a value}"; shift ;;
    --cache-dir) cache_dir="${2:?--cache-dir needs a value}"; shift ;;
    --host) host="${2:?--host needs a value}"; shift ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift ;;
    --list-models)
      grep -v '^#' "$models_file" | awk -F'\t' '{ printf "%-34s %s\n", $1, $4 }'
      exit 0
      ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

check_ports "$grpc_port" "$http_port"
check_seconds "$timeout" --timeout

# The model's line: name, image, profile, description.
line="$(awk -F'\t' -v m="$model" '!/^#/ && $1 == m' "$models_file")"
if [[ -z "$line" && ( -z "$image" || -z "$profile" ) ]]; then
  die "unknown model '$model' (known: $(grep -v '^#' "$models_file" | cut -f1 | paste -sd' ' -); or pass --image and --profile)"
fi
[[ -n "$image" ]] || image="$(cut -f2 <<<"$line")"
[[ -n "$profile" ]] || profile="$(cut -f3 <<<"$line")"

((dry_run)) && log "dry run: nothing will be changed"
log "model $model, profile '$profile', image $image, container $name"

# Prerequisites, each with its own message.
require_docker_gpu
require_curl
if [[ -z "${NGC_API_KEY:-}" ]]; then
  need "NGC_API_KEY is not set (an NGC personal API key: export NGC_API_KEY=...)"
fi

state=absent
if ((missing == 0)) || docker info >/dev/null 2>&1; then
  state="$(container_state "$name")"
fi

if [[ "$state" != absent ]]; then
  have="$(container_label "$name" speech-gateway.riva-selector)@$(docker inspect --format '{{.Config.Image}}' "$name" 2>/dev/null || true)"
  if [[ "$have" != "$profile@$image" ]]; then
    if ((replace)); then
      log "container $name runs '$have'; replacing it (--replace)"
      mutate docker rm -f "$name" >/dev/null
      state=absent
    else
      die "container $name already exists with another model or image ('$have', wanted '$profile@$image'); pass --replace or --name"
    fi
  fi
fi

case "$state" in
  running)
    log "container $name is already running this model; not re-creating it"
    ;;
  stopped)
    log "container $name exists but is stopped; starting it"
    mutate docker start "$name" >/dev/null
    ;;
  absent)
    if ! docker image inspect "$image" >/dev/null 2>&1; then
      # Pulling from nvcr.io needs a login with the NGC key ($oauthtoken is the literal user).
      if ((dry_run)); then
        printf 'would run: %s\n' "docker login nvcr.io --username '\$oauthtoken' --password-stdin <<< \"\$NGC_API_KEY\"" >&2
      else
        log "docker login nvcr.io"
        printf '%s' "$NGC_API_KEY" | docker login nvcr.io --username "\$oauthtoken" --password-stdin >&2
      fi
      mutate docker pull "$image" >&2
    fi
    mutate mkdir -p "$cache_dir"
    mutate docker run --detach --name "$name" --restart unless-stopped \
      --runtime=nvidia --gpus "\"$gpus\"" --shm-size="$RIVA_SHM_SIZE" \
      --env NGC_API_KEY \
      --env "NIM_TAGS_SELECTOR=$profile" \
      --env NIM_GRPC_API_PORT=50051 --env NIM_HTTP_API_PORT=9000 \
      --publish "$grpc_port:50051" --publish "$http_port:9000" \
      --volume "$cache_dir:/opt/nim/.cache" \
      --label speech-gateway.role=riva \
      --label "speech-gateway.riva-selector=$profile" \
      "$image" >/dev/null
    ;;
esac

url="riva://$host:$grpc_port"
if ((dry_run)); then
  printf 'would wait for: %s\n' "http://127.0.0.1:$http_port/v1/health/ready" >&2
  ((missing)) && log "dry run done; fix the missing prerequisites above before a real run"
  log "the gateway's back end would be: $url"
  printf '%s\n' "$url"
  exit 0
fi

wait_http "http://127.0.0.1:$http_port/v1/health/ready" "$timeout" "$name"

# The gateway probes gRPC health (and lists models with GetRivaSpeechRecognitionConfig);
# grpcurl, when installed, checks the same from here with our proto files.
if command -v grpcurl >/dev/null 2>&1; then
  grpcurl -plaintext -import-path "$repo_root/proto" -proto grpc/health/v1/health.proto \
    "127.0.0.1:$grpc_port" grpc.health.v1.Health/Check >&2 ||
    die "gRPC health check on 127.0.0.1:$grpc_port failed"
  grpcurl -plaintext -import-path "$repo_root/proto" -proto riva/riva_asr.proto \
    "127.0.0.1:$grpc_port" nvidia.riva.asr.RivaSpeechRecognition/GetRivaSpeechRecognitionConfig >&2 ||
    die "Riva did not list its models on 127.0.0.1:$grpc_port"
else
  log "grpcurl not installed: gRPC checked by the gateway's own health probe instead"
fi

log "Riva is serving $model. Start the gateway with:"
log "  speech-gateway serve --listen 0.0.0.0:8080 --backend $url"
printf '%s\n' "$url"
