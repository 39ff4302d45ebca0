#!/usr/bin/env bash
# Apply deploy/k8s (gateway, HPA, PDB; Riva and Triton as GPU Deployments behind headless
# Services, which the gateway resolves as DNS pools) to the current Kubernetes context,
# wait for the rollouts, and print the in-cluster gateway URL. Running it again resets
# each back end's replica count to its manifest's `replicas` (kubectl apply): scale there,
# not only with kubectl scale (docs/runbook.md, "Scaling out").
#
# Usage: bash scripts/deploy-k8s.sh [options]
#   --context CTX   kubectl context (default: the current one)
#   --timeout S     rollout wait per Deployment (1800: the back ends download models)
#   --dry-run       check prerequisites and print what would be done; change nothing
#
# Needs: kubectl; a cluster whose nodes offer nvidia.com/gpu (NVIDIA GPU Operator or
# device plugin); in namespace `speech` the secrets ngc-api and ngc-registry (see
# deploy/k8s/gateway/secret.example.yaml); for the HPA's session metric, prometheus-adapter
# with deploy/k8s/monitoring/prometheus-adapter-rules.yaml (without it the HPA scales on
# CPU only, and this script warns). Idempotent: kubectl apply.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
tool="deploy-k8s"
dry_run=0
# shellcheck source=scripts/lib/deploy-common.sh
source "$repo_root/scripts/lib/deploy-common.sh"

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

namespace="speech"
context=""
timeout=1800
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --context) context="${2:?--context needs a value}"; shift ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
check_seconds "$timeout" --timeout

kc=(kubectl)
[[ -n "$context" ]] && kc+=(--context "$context")

((dry_run)) && log "dry run: nothing will be changed"

reachable=0
if ! command -v kubectl >/dev/null 2>&1; then
  need "kubectl is not installed"
elif ! "${kc[@]}" version --request-timeout=10s >/dev/null 2>&1; then
  need "cannot reach the Kubernetes API with kubectl${context:+ (context $context)} (check: kubectl cluster-info)"
else
  reachable=1
fi

if ((reachable)); then
  gpus="$("${kc[@]}" get nodes -o 'jsonpath={.items[*].status.allocatable.nvidia\.com/gpu}' 2>/dev/null || true)"
  [[ "$gpus" =~ [1-9] ]] || need "no node offers nvidia.com/gpu (install the NVIDIA GPU Operator or device plugin)"
  if "${kc[@]}" get namespace "$namespace" >/dev/null 2>&1; then
    for secret in ngc-api ngc-registry; do
      "${kc[@]}" -n "$namespace" get secret "$secret" >/dev/null 2>&1 ||
        need "secret $secret is missing in namespace $namespace (see deploy/k8s/gateway/secret.example.yaml)"
    done
  else
    need "namespace $namespace does not exist: create it and its secrets first (kubectl create namespace $namespace; see deploy/k8s/gateway/secret.example.yaml)"
  fi
  "${kc[@]}" get apiservice v1beta1.custom.metrics.k8s.io >/dev/null 2>&1 ||
    log "warning: no custom metrics API (prometheus-adapter): the HPA will scale on CPU only"
fi

mutate "${kc[@]}" apply -k "$repo_root/deploy/k8s"
for deployment in riva triton-glm speech-gateway; do
  mutate "${kc[@]}" -n "$namespace" rollout status "deployment/$deployment" --timeout="${timeout}s"
done

url="ws://speech-gateway.$namespace.svc:8080/v1/audio/stream"
if ((dry_run)); then
  ((missing)) && log "dry run done; fix the missing prerequisites above before a real run"
else
  log "speech-gateway is rolled out; expose service/speech-gateway (Ingress or LoadBalancer) for clients outside the cluster"
fi
printf '%s\n' "$url"
