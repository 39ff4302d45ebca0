"""Structural checks of deploy/ that no schema tool covers (run by scripts/check-deploy.sh).

- deploy/k8s/kustomization.yaml lists every manifest of deploy/k8s (but the example
  secrets) and nothing else;
- the gateway Deployment probes /ready and /health, and its termination grace period
  exceeds session.drain_timeout + session.flush_timeout + 1 s from its ConfigMap;
- deploy/compose.yml has the five services, and every file it mounts or builds exists;
- the Grafana dashboard is valid JSON with a query in every panel.
Exit 1 with one line per problem.
"""

import json
import re
import sys
from pathlib import Path

import yaml

root = Path(__file__).resolve().parents[1]
k8s = root / "deploy" / "k8s"
problems = []


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    if not m:
        problems.append(f"cannot read duration {text!r}")
        return 0
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
listed = set(kustomization["resources"])
present = {
    str(p.relative_to(k8s))
    for p in k8s.rglob("*.yaml")
    if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml")
}
for missing in sorted(present - listed):
    problems.append(f"deploy/k8s/{missing} is not in kustomization.yaml")
for extra in sorted(listed - present):
    problems.append(f"kustomization.yaml lists {extra}, which does not exist")

deployment = yaml.safe_load((k8s / "gateway" / "deployment.yaml").read_text())
config = yaml.safe_load((k8s / "gateway" / "configmap.yaml").read_text())["data"]
spec = deployment["spec"]["template"]["spec"]
container = spec["containers"][0]
if container["readinessProbe"]["httpGet"]["path"] != "/ready":
    problems.append("gateway readinessProbe must be /ready")
if container["livenessProbe"]["httpGet"]["path"] != "/health":
    problems.append("gateway livenessProbe must be /health")
drain = seconds(config.get("SGW_SESSION__DRAIN_TIMEOUT", "30s"))
flush = seconds(config.get("SGW_SESSION__FLUSH_TIMEOUT", "10s"))
grace = spec["terminationGracePeriodSeconds"]
if grace <= drain + flush + 1:
    problems.append(f"terminationGracePeriodSeconds {grace} must exceed drain {drain}s + flush {flush}s + 1s")

compose_path = root / "deploy" / "compose.yml"
compose = yaml.safe_load(compose_path.read_text())
services = compose.get("services", {})
for name in ("riva", "triton", "gateway", "prometheus", "grafana"):
    if name not in services:
        problems.append(f"compose.yml has no service {name}")
for name, svc in services.items():
    for vol in svc.get("volumes", []):
        src = vol.split(":", 1)[0]
        # certs/ is made on the host by scripts/gen-certs.sh (never committed).
        if src.startswith(".") and not src.startswith("../certs/"):
            if not (compose_path.parent / src).exists():
                problems.append(f"compose.yml {name} mounts missing {src}")
    build = svc.get("build")
    if build:
        ctx = compose_path.parent / build["context"]
        dockerfile = ctx / build.get("dockerfile", "Dockerfile")
        if not dockerfile.is_file():
            problems.append(f"compose.yml {name} builds from missing {dockerfile}")

dashboard = json.loads((root / "deploy" / "grafana" / "dashboards" / "speech-gateway.json").read_text())
for panel in dashboard["panels"]:
    if panel["type"] != "row" and not all(t.get("expr") for t in panel.get("targets", [])) or (
        panel["type"] != "row" and not panel.get("targets")
    ):
        problems.append(f"dashboard panel {panel['title']!r} has no query")

for p in problems:
    print(f"check_assets: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check_assets: ok ({len(present)} manifests, {len(services)} compose services, {len(dashboard['panels'])} dashboard panels)")
