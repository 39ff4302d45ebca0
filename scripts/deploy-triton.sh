#!/usr/bin/env bash
# Start NVIDIA Triton serving GLM-ASR-Nano-2512 (riva/triton/gpu-models/asr_glm_nano, our
# offline tensor contract) on this GPU host, wait until the model is ready, and print the
# gateway's --backend URL on stdout.
#
# Usage: bash scripts/deploy-triton.sh [options]
#   --name NAME         container name (sgw-triton)
#   --base-image IMAGE  Triton image to build on (nvcr.io/nvidia/tritonserver:25.01-py3)
#   --grpc-port N       host gRPC port (8001)  --http-port N (8000)  --metrics-port N (8002)
#   --gpus SPEC         docker --gpus value (device=0)
#   --hf-cache DIR      Hugging Face cache on the host (~/.cache/huggingface)
#   --host HOST         host name in the printed URL (127.0.0.1)
#   --timeout S         readiness wait (1200)
#   --replace           remove a container of that name built from another image
#   --dry-run           check prerequisites and print what would be done; change nothing
#
# Needs: Docker with the NVIDIA Container Toolkit, an NVIDIA GPU, curl, and access to the
# Hugging Face hub on first start (the weights are downloaded into --hf-cache; HF_TOKEN is
# passed on when set). Defaults come from riva/triton/glm/triton.env.
#
# Idempotent: the image (riva/triton/glm/Dockerfile: Triton + transformers + our model
# repository) is built only when its tag, a hash of its inputs, is missing; a container of that
# name already running that image is reused; a stopped one is started again.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
tool="deploy-triton"
dry_run=0
# shellcheck source=scripts/lib/deploy-common.sh
source "$repo_root/scripts/lib/deploy-common.sh"
# shellcheck source=riva/triton/glm/triton.env
source "$repo_root/riva/triton/glm/triton.env"
glm_dir="$repo_root/riva/triton/glm"

usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

name="$TRITON_CONTAINER" base_image="$TRITON_BASE_IMAGE" model="$TRITON_MODEL" replace=0
grpc_port="$TRITON_GRPC_PORT" http_port="$TRITON_HTTP_PORT" metrics_port="$TRITON_METRICS_PORT"
gpus="$TRITON_GPUS" hf_cache="$TRITON_HF_CACHE" host="$TRITON_PUBLIC_HOST" timeout="$TRITON_START_TIMEOUT"

while (($#)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --replace) replace=1 ;;
    --name) name="${2:?--name needs a value}"; shift ;;
    --base-image) base_image="${2:?--base-image needs a value}"; shift ;;
    --grpc-port) grpc_port="${2:?--grpc-port needs a value}"; shift ;;
    --http-port) http_port="${2:?--http-port needs a value}"; shift ;;
    --metrics-port) metrics_port="${2:?--metrics-port needs a value}"; shift ;;
    --gpus) gpus="${2:?--gpus needs a value}"; shift ;;
    --hf-cache) hf_cache="${2:?--hf-cache needs a value}"; shift ;;
    --host) host="${2:?--host needs a value}"; shift ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

check_ports "$grpc_port" "$http_port" "$metrics_port"
check_seconds "$timeout" --timeout
[[ -f "$repo_root/riva/triton/gpu-models/$model/config.pbtxt" ]] || die "no model $model in riva/triton/gpu-models"

# The image tag is a hash of its inputs (base image, Dockerfile, requirements, model code),
# so a change gets a new image and an unchanged one is never rebuilt.
digest="$(
  cd "$repo_root/riva/triton"
  {
    printf '%s\n' "$base_image"
    find glm lib gpu-models -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-12
)"
image="speech-gateway/triton-glm:$digest"

((dry_run)) && log "dry run: nothing will be changed"
log "model $model, image $image (from $base_image), container $name"

require_docker_gpu
require_curl

state=absent
if docker info >/dev/null 2>&1; then
  state="$(container_state "$name")"
fi

if [[ "$state" != absent ]]; then
  have="$(docker inspect --format '{{.Config.Image}}' "$name" 2>/dev/null || true)"
  if [[ "$have" != "$image" ]]; then
    if ((replace)); then
      log "container $name runs '$have'; replacing it (--replace)"
      mutate docker rm -f "$name" >/dev/null
      state=absent
    else
      die "container $name already exists with another image ('$have', wanted '$image'); pass --replace or --name"
    fi
  fi
fi

case "$state" in
  running)
    log "container $name is already running $image; not re-creating it"
    ;;
  stopped)
    log "container $name exists but is stopped; starting it"
    mutate docker start "$name" >/dev/null
    ;;
  absent)
    if ! docker image inspect "$image" >/dev/null 2>&1; then
      mutate docker build --tag "$image" --build-arg "TRITON_IMAGE=$base_image" \
        --file "$glm_dir/Dockerfile" "$repo_root/riva/triton" >&2
    fi
    mutate mkdir -p "$hf_cache"
    hf_token=()
    [[ -n "${HF_TOKEN:-}" ]] && hf_token=(--env HF_TOKEN)
    mutate docker run --detach --name "$name" --restart unless-stopped \
      --runtime=nvidia --gpus "\"$gpus\"" --shm-size="$TRITON_SHM_SIZE" \
      --publish "$grpc_port:8001" --publish "$http_port:8000" --publish "$metrics_port:8002" \
      --volume "$hf_cache:/opt/sgw/hf-cache" \
      --env HF_HOME=/opt/sgw/hf-cache "${hf_token[@]}" \
      --label speech-gateway.role=triton \
      "$image" >/dev/null
    ;;
esac

url="triton://$host:$grpc_port/$model"
ready="http://127.0.0.1:$http_port/v2/models/$model/ready"
if ((dry_run)); then
  printf 'would wait for: %s\n' "$ready" >&2
  ((missing)) && log "dry run done; fix the missing prerequisites above before a real run"
  log "the gateway's back end would be: $url"
  printf '%s\n' "$url"
  exit 0
fi

wait_http "$ready" "$timeout" "$name"

log "Triton is serving $model. Start the gateway with (offline model: the gateway endpoints with its VAD):"
log "  speech-gateway serve --listen 0.0.0.0:8080 --backend $url"
printf '%s\n' "$url"
