#!/usr/bin/env bash
# Static checks of the deployment assets, all offline: shellcheck of scripts/ (and, where
# node is installed, a syntax check of benches/relay-client/*.js), the
# Kubernetes manifests against the Kubernetes schemas (kubernetes-validate, strict), the
# Prometheus configuration and alert rules (promtool check + promtool test rules), and
# the structure of compose, kustomization and dashboard (deploy/check_assets.py).
#
# Usage: bash scripts/check-deploy.sh
# Needs shellcheck and promtool (Debian packages shellcheck, prometheus; scripts/test.sh
# installs them) and python3 (the validator venv .venv/deploy is built from
# deploy/requirements.txt, hash-checked, re-installed only when that file changes).
# The script tests (fake docker/kubectl) and the live /metrics checks are tests/deploy.rs.
set -euo pipefail

repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$repo_root"
venv="$repo_root/.venv/deploy"
req="$repo_root/deploy/requirements.txt"
stamp="$venv/.requirements.sha256"

log() { printf 'check-deploy: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for t in shellcheck promtool python3; do
  command -v "$t" >/dev/null 2>&1 || die "$t is not installed (apt-get install shellcheck prometheus)"
done

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating venv at $venv"
  python3 -m venv "$venv" >&2
fi
want="$(sha256sum -- "$req" | cut -d' ' -f1)"
if [[ "$want" != "$(cat -- "$stamp" 2>/dev/null || true)" ]]; then
  log "installing $req"
  rm -f -- "$stamp"
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
    --require-hashes -r "$req" >&2
  printf '%s\n' "$want" >"$stamp"
fi

log "shellcheck scripts/"
shellcheck -x scripts/*.sh scripts/lib/*.sh
# The load client of scripts/bench-relays.sh (a benchmark, never run here): syntax only.
if command -v node >/dev/null 2>&1; then
  log "node --check benches/relay-client/*.js"
  for f in benches/relay-client/*.js; do node --check "$f"; done
else
  log "node not found: benches/relay-client/*.js not syntax-checked"
fi

log "Kubernetes manifests (kubernetes-validate --strict, bundled schemas)"
mapfile -t manifests < <(find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | LC_ALL=C sort)
out="$("$venv/bin/kubernetes-validate" --strict --quiet "${manifests[@]}" 2>&1)" || {
  printf '%s\n' "$out" >&2
  die "manifests do not validate"
}
# A kind without a schema is only a warning there: refuse it here.
if [[ -n "$out" ]]; then
  printf '%s\n' "$out" >&2
  die "kubernetes-validate warned (a kind without a schema?)"
fi
log "${#manifests[@]} manifest files valid"

log "promtool check config / rules, promtool test rules"
promtool check config deploy/prometheus/prometheus.yml >&2
promtool test rules deploy/prometheus/alerts_test.yml >&2

log "compose, kustomization and dashboard structure"
"$venv/bin/python" deploy/check_assets.py >&2

log "all deployment assets pass"
