"""Structural checks of deploy/ that no schema tool covers (run by scripts/check-deploy.sh).

- deploy/k8s/kustomization.yaml lists every manifest of deploy/k8s (but the example
  secrets) and nothing else;
- the gateway Deployment probes /ready and /health, and its termination grace period
  exceeds session.drain_timeout + session.flush_timeout + 1 s from its ConfigMap;
- the gateway's routes (the ConfigMap's SGW_ROUTES__*, and the commented `# SGW_...: "..."`
  examples there) name Riva and Triton only as DNS pools, each at
  SERVICE.NAMESPACE.svc[.DOMAIN]:PORT of a headless Service of the kustomization (its
  namespace, one of its ports); every headless Service lists only ready pods, selects the
  pods of exactly one Deployment, dials a port that Deployment's containers open, and is
  named by a route; the pods behind it sleep in preStop longer than dns.interval + the
  cluster DNS's TTL, within their termination grace period; every PodDisruptionBudget
  selects the pods of exactly one Deployment;
- every file path the gateway's settings name (key files, JWKS, back-end TLS files) lies
  under one of the gateway container's volume mounts;
- every HorizontalPodAutoscaler (also the *.example.yaml ones) scales a Deployment of the
  kustomization, on Pods metrics that the prometheus-adapter rules serve;
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


# --- routes, DNS pools and the headless Services they name ----------------------------------

# CoreDNS's `kubernetes` plugin answers with this TTL unless configured otherwise: a
# gateway may see a removed pod's address that much after its own dns.interval.
CLUSTER_DNS_TTL_S = 5
POOL_SCHEMES = {"riva", "rivas", "triton", "tritons"}
namespace = kustomization.get("namespace", "default")


def documents(paths):
    for rel in paths:
        path = k8s / rel
        if path.is_file():
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    yield rel, doc


def kinds(docs, kind):
    return {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == kind}


applied = list(documents(sorted(listed)))
examples = list(documents(sorted(str(p.relative_to(k8s)) for p in k8s.rglob("*.example.yaml"))))
deployments = kinds(applied, "Deployment")
headless = {
    name: svc
    for name, svc in kinds(applied, "Service").items()
    if svc["spec"].get("clusterIP") == "None"
}


def pods_selected(selector):
    """The Deployments whose pods carry every label of `selector`."""
    return [
        name
        for name, d in deployments.items()
        if selector and selector.items() <= d["spec"]["template"]["metadata"].get("labels", {}).items()
    ]


def container_port(deployment, target):
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        for p in c.get("ports", []):
            if target in (p.get("name"), p["containerPort"]):
                return p["containerPort"]
    return None


dns_interval = seconds(config.get("SGW_DNS__INTERVAL", "5s"))
for name, svc in sorted(headless.items()):
    spec_ = svc["spec"]
    if spec_.get("publishNotReadyAddresses"):
        problems.append(f"headless Service {name} publishes not-ready addresses: the gateway would send sessions to pods still loading")
    owners = pods_selected(spec_.get("selector", {}))
    if len(owners) != 1:
        problems.append(f"headless Service {name} must select the pods of exactly one Deployment, selects {owners or 'none'}")
        continue
    owner = deployments[owners[0]]
    for port in spec_.get("ports", []):
        got = container_port(owner, port.get("targetPort", port["port"]))
        if got != port["port"]:
            problems.append(
                f"headless Service {name} port {port['port']}: the gateway dials the pod at that port, "
                f"but Deployment {owners[0]} opens {got} for it"
            )
    pod = owner["spec"]["template"]["spec"]
    grace = pod.get("terminationGracePeriodSeconds", 30)
    for c in pod["containers"]:
        sleep = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        if sleep <= dns_interval + CLUSTER_DNS_TTL_S:
            problems.append(
                f"Deployment {owners[0]} container {c['name']}: preStop sleep {sleep}s must exceed "
                f"dns.interval {dns_interval:g}s + the cluster DNS TTL {CLUSTER_DNS_TTL_S}s (the gateways still send it sessions meanwhile)"
            )
        if sleep >= grace:
            problems.append(f"Deployment {owners[0]}: preStop sleep {sleep}s leaves nothing of terminationGracePeriodSeconds {grace}")

for name, pdb in sorted(kinds(applied, "PodDisruptionBudget").items()):
    owners = pods_selected(pdb["spec"]["selector"].get("matchLabels", {}))
    if len(owners) != 1:
        problems.append(f"PodDisruptionBudget {name} must select the pods of exactly one Deployment, selects {owners or 'none'}")

# The ConfigMap's settings, and the commented examples beside them (meant to be used as
# written, so held to the same rules).
configmap_text = (k8s / "gateway" / "configmap.yaml").read_text()
commented = re.findall(r'^\s*#\s+(SGW_[A-Z0-9_]+):\s*"([^"]*)"\s*$', configmap_text, re.M)
settings = [(k, str(v), "") for k, v in config.items()] + [(k, v, " (commented example)") for k, v in commented]
used = set()
paths = []
for key, value, where in settings:
    if key.startswith("SGW_ROUTES__"):
        for url in (u.strip() for tier in value.split("|") for u in tier.split(",")):
            scheme, _, rest = url.partition("://")
            authority = rest.split("/", 1)[0].split("?", 1)[0]
            query = url.partition("?")[2]
            for pair in filter(None, query.split("&")):
                k, _, v = pair.partition("=")
                if k in ("key_file", "ca", "cert", "key"):
                    paths.append((f"{key}{where}", v))
            base = scheme.removesuffix("+dns")
            if base not in POOL_SCHEMES:
                continue
            if not scheme.endswith("+dns"):
                problems.append(f"{key}{where}: {url} is one address; name the back end's headless Service as a DNS pool ({base}+dns://)")
                continue
            host, _, port = authority.rpartition(":")
            m = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.[a-z0-9.-]+)?", host)
            if not m:
                problems.append(f"{key}{where}: {url} does not name a Service as SERVICE.NAMESPACE.svc.DOMAIN")
                continue
            svc_name, svc_ns = m.group(1), m.group(2)
            used.add(svc_name)
            if svc_ns != namespace:
                problems.append(f"{key}{where}: {url} is in namespace {svc_ns}, the kustomization deploys to {namespace}")
            if svc_name not in headless:
                problems.append(f"{key}{where}: {url} names {svc_name}, which is no headless Service of the kustomization")
            elif not any(str(p["port"]) == port for p in headless[svc_name]["spec"].get("ports", [])):
                problems.append(f"{key}{where}: {url} dials port {port}, which headless Service {svc_name} does not list")
    elif value.startswith("/"):
        paths.append((f"{key}{where}", value))
for name in sorted(set(headless) - used):
    problems.append(f"headless Service {name} is named by no route of the gateway ConfigMap")

mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
for key, path in paths:
    if not any(path.startswith(m) for m in mounts):
        problems.append(f"{key}: {path} is under none of the gateway's volume mounts {mounts}")

# --- autoscalers and the metrics they read --------------------------------------------------

adapter = kinds(applied, "ConfigMap").get("speech-gateway-adapter-rules")
served = set()
if adapter:
    for rule in yaml.safe_load(adapter["data"]["config.yaml"]).get("rules", []):
        served.add(rule.get("name", {}).get("as") or rule["seriesQuery"].split("{")[0])
for rel, hpa in applied + examples:
    if hpa.get("kind") != "HorizontalPodAutoscaler":
        continue
    target = hpa["spec"]["scaleTargetRef"]
    if target["kind"] != "Deployment" or target["name"] not in deployments:
        problems.append(f"{rel}: HPA {hpa['metadata']['name']} scales {target['kind']} {target['name']}, which the kustomization does not deploy")
    for metric in hpa["spec"].get("metrics", []):
        if metric["type"] == "Pods" and metric["pods"]["metric"]["name"] not in served:
            problems.append(f"{rel}: HPA {hpa['metadata']['name']} reads {metric['pods']['metric']['name']}, which no prometheus-adapter rule serves")

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
print(f"check_assets: ok ({len(present)} manifests, {len(headless)} DNS-pool Services, {len(services)} compose services, {len(dashboard['panels'])} dashboard panels)")
