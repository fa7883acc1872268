#!/usr/bin/env bash
# Validate hookrelay's deployment artifacts (deploy/) on a machine without
# Docker or Kubernetes. Runnable from any directory:
#
#   bash deploy/validate.sh [--metric-names OUT] [BINARY]
#
#   --metric-names OUT  write every hookrelay metric family used by the Grafana
#                       dashboard and the alert rules to OUT, one per line,
#                       sorted: the names of the `# TYPE` lines of /metrics
#                       (counter `_total` and histogram `_bucket`/`_sum`/
#                       `_count` suffixes stripped). A Rust test can compare
#                       them with a live relay's exposition. `-` = stdout.
#   BINARY              an existing executable to put in ExecStart= for
#                       `systemd-analyze verify` (it checks that the binary
#                       exists); default /usr/local/bin/hookrelay if present,
#                       else /bin/true.
#
# What is checked (each check prints PASS, FAIL or SKIP):
#   yaml        every *.yaml / *.yml under deploy/ parses (PyYAML)
#   toml        every *.toml, and the TOML inside the ConfigMap, parses;
#               every "env:NAME" it uses is provided by compose.yaml / the
#               Secret template
#   dashboard   the Grafana JSON parses and is wired to ${DS_PROMETHEUS} and $sink
#   promql      every dashboard query parses (promtool, via a scratch rule file)
#   rules       promtool check rules prometheus/hookrelay-alerts.yaml
#   rule-tests  promtool test rules prometheus/hookrelay-alerts.test.yaml
#   metrics     dashboard + alerts use only the metric contract, with the right
#               suffix for each type, and the dashboard shows every metric
#   kubernetes  manifests are namespace-agnostic and consistent (selectors,
#               named ports, probes on the admin port, ConfigMap/Secret names,
#               hardened securityContext, kustomization lists every manifest)
#   kustomize   `kubectl kustomize` / `kustomize build` renders (if installed)
#   container   Containerfile and compose.yaml agree (ports, config path,
#               healthchecks); hadolint if installed
#   systemd     systemd-analyze verify and an offline security score (if installed)
#
# Exit status: 0 when nothing failed, 1 otherwise, 2 on a usage error.

set -euo pipefail

DEPLOY_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
METRIC_NAMES_OUT=""
UNIT_BINARY=""

usage() {
  sed -n '2,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($#)); do
  case "$1" in
    --metric-names)
      [[ $# -ge 2 ]] || { echo "validate.sh: --metric-names needs a file" >&2; exit 2; }
      METRIC_NAMES_OUT="$2"; shift 2 ;;
    --metric-names=*) METRIC_NAMES_OUT="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "validate.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      [[ -z "$UNIT_BINARY" ]] || { echo "validate.sh: only one BINARY argument" >&2; exit 2; }
      UNIT_BINARY="$1"; shift ;;
  esac
done

if [[ -n "$METRIC_NAMES_OUT" && "$METRIC_NAMES_OUT" != "-" ]]; then
  # Resolve against the caller's directory and fail early on a bad path.
  out_dir="$(dirname -- "$METRIC_NAMES_OUT")"
  [[ -d "$out_dir" ]] || { echo "validate.sh: directory $out_dir does not exist" >&2; exit 2; }
  METRIC_NAMES_OUT="$(cd -- "$out_dir" && pwd)/$(basename -- "$METRIC_NAMES_OUT")"
fi

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/hookrelay-validate.XXXXXX")"
trap 'rm -rf -- "$SCRATCH"' EXIT

PASSED=0 FAILED=0 SKIPPED=0
SKIP=77 # a check returns this when its tool is missing

# Run one check in a subshell with errexit in force (a function called as an
# `if` condition would run with errexit silently disabled), and indent its output.
run_check() {
  local name="$1"; shift
  local rc
  set +e
  ( set -euo pipefail; "$@" ) > "$SCRATCH/out" 2>&1
  rc=$?
  set -e
  case "$rc" in
    0) PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$name" ;;
    "$SKIP") SKIPPED=$((SKIPPED + 1)); printf 'SKIP  %s\n' "$name" ;;
    *) FAILED=$((FAILED + 1)); printf 'FAIL  %s (exit %s)\n' "$name" "$rc" ;;
  esac
  sed 's/^/      /' "$SCRATCH/out"
}

have() { command -v "$1" > /dev/null 2>&1; }

# ---- prerequisites -----------------------------------------------------------

have "$PYTHON" || { echo "validate.sh: $PYTHON is required" >&2; exit 1; }
if ! "$PYTHON" -c 'import yaml' 2> /dev/null; then
  echo "PyYAML missing: installing it with pip (python3 -m pip install pyyaml)"
  "$PYTHON" -m pip install --quiet pyyaml > /dev/null 2>&1 \
    || "$PYTHON" -m pip install --quiet --user pyyaml > /dev/null 2>&1 \
    || echo "could not install PyYAML (try: apt-get install python3-yaml): the YAML-based checks will fail"
fi

# ---- checks --------------------------------------------------------------------

check_yaml() {
  "$PYTHON" - "$DEPLOY_DIR" <<'PY'
import pathlib, sys, yaml
root = pathlib.Path(sys.argv[1])
files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
bad = 0
for p in files:
    try:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        print(f"{p.relative_to(root)}: {len(docs)} document(s)")
    except yaml.YAMLError as e:
        bad += 1
        print(f"{p.relative_to(root)}: {e}")
if not files:
    sys.exit("no YAML files found")
sys.exit(1 if bad else 0)
PY
}

check_toml() {
  "$PYTHON" - "$DEPLOY_DIR" <<'PY'
import pathlib, re, sys, tomllib, yaml
root = pathlib.Path(sys.argv[1])
errors = []

def env_refs(value):
    """Names used as "env:NAME" anywhere in a parsed TOML document."""
    if isinstance(value, dict):
        return set().union(*(env_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(env_refs(v) for v in value)) if value else set()
    if isinstance(value, str) and value.startswith("env:"):
        return {value[4:]}
    return set()

def parse(label, text):
    try:
        doc = tomllib.loads(text)
        print(f"{label}: ok, env refs: {', '.join(sorted(env_refs(doc))) or '-'}")
        return doc
    except tomllib.TOMLDecodeError as e:
        errors.append(f"{label}: {e}")
        return None

tomls = {p: parse(str(p.relative_to(root)), p.read_text()) for p in sorted(root.rglob("*.toml"))}

# The TOML embedded in the Kubernetes ConfigMap.
cm = yaml.safe_load((root / "kubernetes/configmap.yaml").read_text())
k8s_toml = None
for key, text in cm.get("data", {}).items():
    if key.endswith(".toml"):
        k8s_toml = parse(f"kubernetes/configmap.yaml[{key}]", text)

# Every env: reference must be provided where that config is used.
container_toml = tomls.get(root / "container/hookrelay.toml")
if container_toml is not None:
    compose = yaml.safe_load((root / "container/compose.yaml").read_text())
    for svc, spec in compose["services"].items():
        if not svc.startswith("hookrelay"):
            continue
        missing = env_refs(container_toml) - set(spec.get("environment", {}))
        if missing:
            errors.append(f"compose.yaml service {svc} lacks env {sorted(missing)} used by hookrelay.toml")
if k8s_toml is not None:
    secret = yaml.safe_load((root / "kubernetes/secret.example.yaml").read_text())
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    missing = env_refs(k8s_toml) - keys
    if missing:
        errors.append(f"secret.example.yaml lacks keys {sorted(missing)} used by the ConfigMap's TOML")
    bad_keys = [k for k in keys if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
    if bad_keys:
        errors.append(f"secret.example.yaml keys are not env var names (envFrom): {bad_keys}")

for e in errors:
    print("error:", e)
sys.exit(1 if errors else 0)
PY
}

check_dashboard() {
  "$PYTHON" - "$DEPLOY_DIR/grafana/hookrelay-dashboard.json" <<'PY'
import json, sys
path = sys.argv[1]
d = json.load(open(path))
errors = []
DS_UID = "${DS_PROMETHEUS}"

def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))

if d.get("schemaVersion") != 39:
    errors.append(f"schemaVersion is {d.get('schemaVersion')}, expected 39")
if not d.get("uid"):
    errors.append("dashboard has no uid")
variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
ds = variables.get("DS_PROMETHEUS")
if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    errors.append("templating lacks the datasource variable DS_PROMETHEUS (type prometheus)")
sink = variables.get("sink")
sink_query = sink and (sink["query"]["query"] if isinstance(sink.get("query"), dict) else sink.get("query"))
if not sink or sink_query.replace(" ", "") != "label_values(hookrelay_queue_depth,sink)":
    errors.append("templating variable sink must come from label_values(hookrelay_queue_depth, sink)")

ids, n_queries = set(), 0
for p in panels(d.get("panels", [])):
    if p.get("id") in ids:
        errors.append(f"duplicate panel id {p.get('id')}")
    ids.add(p.get("id"))
    if p.get("type") == "row":
        continue
    title = p.get("title", "?")
    if p.get("datasource", {}).get("uid") != DS_UID:
        errors.append(f"panel {title!r}: datasource is not {DS_UID}")
    if not p.get("targets"):
        errors.append(f"panel {title!r}: no queries")
    for t in p.get("targets", []):
        n_queries += 1
        if t.get("datasource", {}).get("uid") != DS_UID:
            errors.append(f"panel {title!r} query {t.get('refId')}: datasource is not {DS_UID}")
        if not t.get("expr"):
            errors.append(f"panel {title!r} query {t.get('refId')}: empty expr")
    gp = p.get("gridPos", {})
    if not (gp.get("w", 0) > 0 and gp.get("h", 0) > 0 and gp.get("x", 0) + gp.get("w", 0) <= 24):
        errors.append(f"panel {title!r}: bad gridPos {gp}")
print(f"{len(ids)} panels, {n_queries} queries, variables: {', '.join(variables)}")
for e in errors:
    print("error:", e)
sys.exit(1 if errors else 0)
PY
}

check_promql() {
  have promtool || { echo "promtool not found (Debian: apt-get install prometheus)"; return "$SKIP"; }
  # promtool has no "check expression" command, so every dashboard query
  # becomes a recording rule in a scratch file. Grafana's variables are
  # replaced with values of the right type first.
  "$PYTHON" - "$DEPLOY_DIR/grafana/hookrelay-dashboard.json" "$SCRATCH/dashboard-rules.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h", "$sink": ".*"}
rules = []
def walk(ps):
    for p in ps:
        for t in p.get("targets", []):
            expr = t["expr"]
            for k in sorted(subst, key=len, reverse=True):
                expr = expr.replace(k, subst[k])
            rules.append({"record": f"dashboard:panel{p['id']}_{t['refId']}:check", "expr": expr})
        walk(p.get("panels", []))
walk(d["panels"])
json.dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, open(sys.argv[2], "w"), indent=1)
PY
  promtool check rules "$SCRATCH/dashboard-rules.json"
}

check_rules() {
  have promtool || { echo "promtool not found (Debian: apt-get install prometheus)"; return "$SKIP"; }
  promtool check rules "$DEPLOY_DIR/prometheus/hookrelay-alerts.yaml"
}

check_rule_tests() {
  have promtool || { echo "promtool not found (Debian: apt-get install prometheus)"; return "$SKIP"; }
  promtool test rules "$DEPLOY_DIR/prometheus/hookrelay-alerts.test.yaml"
}

check_metrics() {
  "$PYTHON" - "$DEPLOY_DIR" "$SCRATCH/metric-names" <<'PY'
import json, pathlib, re, sys, yaml
root, out = pathlib.Path(sys.argv[1]), sys.argv[2]

# The metric contract of the hookrelay binary: family name -> type. Keep in
# step with src/metrics.rs and the design document.
CONTRACT = {
    "hookrelay_ingress_requests": "counter",
    "hookrelay_ingress_commit_seconds": "histogram",
    "hookrelay_deliveries": "counter",
    "hookrelay_attempt_duration_seconds": "histogram",
    "hookrelay_queue_depth": "gauge",
    "hookrelay_oldest_pending_age_seconds": "gauge",
    "hookrelay_sink_state": "gauge",
    "hookrelay_end_to_end_seconds": "histogram",
    "hookrelay_build_info": "gauge",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}

def names_in(expr):
    # Drop string literals first so label values are never taken for names.
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    return set(re.findall(r"\bhookrelay_[A-Za-z0-9_:]*", expr))

def exprs_dashboard(d):
    def walk(ps):
        for p in ps:
            for t in p.get("targets", []):
                yield f"dashboard panel {p.get('title')!r}", t.get("expr", "")
            yield from walk(p.get("panels", []))
    yield from walk(d.get("panels", []))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        if v.get("type") == "query":
            yield f"dashboard variable {v['name']}", q

def exprs_rules(doc):
    for g in doc.get("groups", []):
        for r in g.get("rules", []):
            yield f"rule {r.get('alert') or r.get('record')}", r["expr"]

dashboard = json.loads((root / "grafana/hookrelay-dashboard.json").read_text())
rules = yaml.safe_load((root / "prometheus/hookrelay-alerts.yaml").read_text())

errors, families, on_dashboard = [], set(), set()
for where, expr in list(exprs_dashboard(dashboard)) + list(exprs_rules(rules)):
    for name in names_in(expr):
        family = next((name[: -len(s)] for s in ("_bucket", "_sum", "_count", "_total")
                       if name.endswith(s) and name[: -len(s)] in CONTRACT), name)
        kind = CONTRACT.get(family)
        if kind is None:
            errors.append(f"{where}: {name} is not in the metric contract")
            continue
        if not any(name == family + s for s in SUFFIXES[kind]):
            want = " / ".join(family + s for s in SUFFIXES[kind])
            errors.append(f"{where}: {name} - a {kind} is queried as {want}")
            continue
        families.add(family)
        if where.startswith("dashboard"):
            on_dashboard.add(family)

for family in sorted(set(CONTRACT) - on_dashboard):
    errors.append(f"{family} is not shown on the dashboard")
for e in dict.fromkeys(errors):
    print("error:", e)
print(f"{len(families)} metric families used:", " ".join(sorted(families)))
pathlib.Path(out).write_text("".join(f + "\n" for f in sorted(families)))
sys.exit(1 if errors else 0)
PY
}

check_kubernetes() {
  "$PYTHON" - "$DEPLOY_DIR/kubernetes" <<'PY'
import pathlib, sys, tomllib, yaml
kdir = pathlib.Path(sys.argv[1])
errors = []
def err(msg): errors.append(msg)

kust = yaml.safe_load((kdir / "kustomization.yaml").read_text())
resources = kust.get("resources", [])
for r in resources:
    if not (kdir / r).is_file():
        err(f"kustomization.yaml lists missing file {r}")
manifests = {p.name for p in kdir.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
for unlisted in sorted(manifests - set(resources)):
    err(f"{unlisted} is not listed in kustomization.yaml")
if "secret.example.yaml" in resources:
    err("secret.example.yaml must not be in kustomization.yaml (it would overwrite real secrets)")

docs = []
for name in resources + ["secret.example.yaml"]:
    for doc in yaml.safe_load_all((kdir / name).read_text()):
        if doc is None:
            continue
        for key in ("apiVersion", "kind"):
            if key not in doc:
                err(f"{name}: document without {key}")
        md = doc.get("metadata", {})
        if not md.get("name"):
            err(f"{name}: {doc.get('kind')} without metadata.name")
        if "namespace" in md:
            err(f"{name}: {doc.get('kind')}/{md.get('name')} sets a namespace (must be namespace-agnostic)")
        docs.append((name, doc))

def of_kind(kind):
    return [d for _, d in docs if d.get("kind") == kind]

def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

deployments = of_kind("Deployment")
if len(deployments) != 1:
    err(f"expected one Deployment, found {len(deployments)}")
    print("\n".join("error: " + e for e in errors)); sys.exit(1)
dep = deployments[0]
pod = dep["spec"]["template"]
pod_labels = pod["metadata"]["labels"]
if not selects(dep["spec"]["selector"]["matchLabels"], pod_labels):
    err("Deployment selector does not match its pod template labels")
if dep["spec"].get("replicas", 1) < 2:
    err("Deployment should run at least 2 replicas")

spec = pod["spec"]
psc = spec.get("securityContext", {})
(container,) = [c for c in spec["containers"] if c["name"] == "hookrelay"]
csc = container.get("securityContext", {})
if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
    err("runAsNonRoot is not set")
if csc.get("readOnlyRootFilesystem") is not True:
    err("readOnlyRootFilesystem is not true")
if csc.get("allowPrivilegeEscalation") is not False:
    err("allowPrivilegeEscalation is not false")
if "ALL" not in csc.get("capabilities", {}).get("drop", []):
    err("capabilities are not dropped")

ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
    get = container.get(probe, {}).get("httpGet", {})
    port = get.get("port")
    port = ports.get(port, port)
    if get.get("path") != path or port != 9090:
        err(f"{probe} must be GET {path} on the admin port 9090, is {get}")

# The ConfigMap's TOML must agree with the container ports and probes.
config_volume = next((v for v in spec.get("volumes", []) if "configMap" in v), None)
cms = {d["metadata"]["name"]: d for d in of_kind("ConfigMap")}
if not config_volume or config_volume["configMap"]["name"] not in cms:
    err("the config volume does not reference the ConfigMap in configmap.yaml")
else:
    cm = cms[config_volume["configMap"]["name"]]
    for item in config_volume["configMap"].get("items", []):
        if item["key"] not in cm.get("data", {}):
            err(f"ConfigMap has no key {item['key']}")
    mount = next(m for m in container["volumeMounts"] if m["name"] == config_volume["name"])
    config_arg = container["args"][container["args"].index("--config") + 1]
    key = pathlib.PurePosixPath(config_arg).name
    if not config_arg.startswith(mount["mountPath"] + "/") or key not in cm.get("data", {}):
        err(f"--config {config_arg} is not a file of the mounted ConfigMap")
    else:
        cfg = tomllib.loads(cm["data"][key])
        if cfg.get("admin", {}).get("listen") != "0.0.0.0:9090":
            err("[admin] listen must be 0.0.0.0:9090 in the pod, or the probes cannot reach it")
        ingress_port = int(cfg.get("server", {}).get("listen", ":0").rsplit(":", 1)[1])
        if ports.get("ingress") != ingress_port:
            err(f"[server] listen port {ingress_port} != containerPort ingress {ports.get('ingress')}")

secret_names = {d["metadata"]["name"] for d in of_kind("Secret")}
for ref in container.get("envFrom", []):
    name = ref.get("secretRef", {}).get("name")
    if name and name not in secret_names:
        err(f"envFrom references Secret {name}, but secret.example.yaml defines {sorted(secret_names)}")

services = of_kind("Service")
if len(services) != 2:
    err(f"expected two Services (ingress and admin), found {len(services)}")
for svc in services:
    sname = svc["metadata"]["name"]
    if not selects(svc["spec"].get("selector", {}), pod_labels):
        err(f"Service {sname} does not select the hookrelay pods")
    for p in svc["spec"]["ports"]:
        target = p.get("targetPort", p["port"])
        if isinstance(target, str) and target not in ports:
            err(f"Service {sname} targets unknown port name {target}")
    targets = {ports.get(p.get("targetPort"), p.get("targetPort")) for p in svc["spec"]["ports"]}
    if 9090 in targets and 8080 in targets:
        err(f"Service {sname} exposes ingress and admin together")

for pdb in of_kind("PodDisruptionBudget"):
    if not selects(pdb["spec"]["selector"]["matchLabels"], pod_labels):
        err("PodDisruptionBudget does not select the hookrelay pods")
    if pdb["spec"].get("minAvailable") != 1:
        err("PodDisruptionBudget minAvailable should be 1")

print(f"{len(docs)} objects:", ", ".join(f"{d['kind']}/{d['metadata']['name']}" for _, d in docs))
for e in errors:
    print("error:", e)
sys.exit(1 if errors else 0)
PY
}

check_kustomize() {
  # Client-side rendering only: needs no cluster.
  if have kustomize; then
    kustomize build "$DEPLOY_DIR/kubernetes" > "$SCRATCH/kustomized.yaml"
  elif have kubectl; then
    kubectl kustomize "$DEPLOY_DIR/kubernetes" > "$SCRATCH/kustomized.yaml"
  else
    echo "neither kustomize nor kubectl found"
    return "$SKIP"
  fi
  echo "rendered $(grep -c '^kind:' "$SCRATCH/kustomized.yaml") objects"
  if have kubeconform; then
    kubeconform -strict -summary "$SCRATCH/kustomized.yaml"
  else
    echo "kubeconform not found: schema validation skipped"
  fi
}

check_container() {
  "$PYTHON" - "$DEPLOY_DIR/container" <<'PY'
import json, pathlib, re, sys, yaml
cdir = pathlib.Path(sys.argv[1])
errors = []
text = (cdir / "Containerfile").read_text()
# Join continuation lines, then look at the instructions of the last stage.
lines = re.sub(r"\\\n", " ", text).splitlines()
instr = [l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#")]
last_from = max(i for i, l in enumerate(instr) if l.upper().startswith("FROM "))
runtime = instr[last_from:]
def find(word):
    return [l for l in runtime if l.split(None, 1)[0].upper() == word]

expose = {p for l in find("EXPOSE") for p in l.split()[1:]}
if not {"8080", "9090"} <= expose:
    errors.append(f"EXPOSE should list 8080 and 9090, has {sorted(expose)}")
user = find("USER")
if not user or user[-1].split()[1].split(":")[0] in ("0", "root"):
    errors.append("the runtime stage must switch to a non-root USER")
if not any("/var/lib/hookrelay" in l for l in find("VOLUME")):
    errors.append("VOLUME /var/lib/hookrelay missing")
health = find("HEALTHCHECK")
if not health or "healthz" not in health[-1]:
    errors.append("HEALTHCHECK against /healthz missing")
elif "CMD [" not in health[-1]:
    errors.append("HEALTHCHECK must use the exec form: the runtime image has no shell")
cmd = find("CMD")
cmd_args = json.loads(cmd[-1].split(None, 1)[1]) if cmd else []
config_path = cmd_args[cmd_args.index("--config") + 1] if "--config" in cmd_args else None

compose = yaml.safe_load((cdir / "compose.yaml").read_text())
relays = {n: s for n, s in compose["services"].items() if n.startswith("hookrelay")}
if len(relays) < 2:
    errors.append("compose.yaml should run two relays")
if not any("postgres" in s.get("image", "") for s in compose["services"].values()):
    errors.append("compose.yaml has no postgres service")
for name, svc in compose["services"].items():
    if "healthcheck" not in svc:
        errors.append(f"compose service {name} has no healthcheck")
for name, svc in relays.items():
    mounts = [v.split(":")[1] for v in svc.get("volumes", []) if isinstance(v, str)]
    svc_config = svc["command"][svc["command"].index("--config") + 1]
    if svc_config not in mounts:
        errors.append(f"{name}: --config {svc_config} is not mounted")
    if config_path and svc_config != config_path:
        errors.append(f"{name}: --config {svc_config} differs from the image's {config_path}")
    if svc.get("depends_on", {}).get("postgres", {}).get("condition") != "service_healthy":
        errors.append(f"{name}: should wait for a healthy postgres")
    for p in svc.get("ports", []):
        if str(p).endswith(":9090") and not str(p).startswith("127.0.0.1:"):
            errors.append(f"{name}: admin port published beyond loopback: {p}")
print(f"runtime stage: {runtime[0]}; compose services: {', '.join(compose['services'])}")
for e in errors:
    print("error:", e)
sys.exit(1 if errors else 0)
PY
  if have hadolint; then
    hadolint "$DEPLOY_DIR/container/Containerfile"
  else
    echo "hadolint not found: Containerfile lint skipped"
  fi
}

check_systemd() {
  have systemd-analyze || { echo "systemd-analyze not found"; return "$SKIP"; }
  local binary="$UNIT_BINARY"
  if [[ -z "$binary" ]]; then
    if [[ -x /usr/local/bin/hookrelay ]]; then binary=/usr/local/bin/hookrelay; else binary=/bin/true; fi
  fi
  [[ -x "$binary" ]] || { echo "$binary is not an executable file"; return 1; }
  binary="$(cd -- "$(dirname -- "$binary")" && pwd)/$(basename -- "$binary")"
  echo "ExecStart binary for verification: $binary"
  mkdir -p "$SCRATCH/systemd"
  # Same unit, only the ExecStart binary swapped for one that exists here.
  sed "s#^ExecStart=/usr/local/bin/hookrelay#ExecStart=$binary#" \
    "$DEPLOY_DIR/systemd/hookrelay.service" > "$SCRATCH/systemd/hookrelay.service"
  # systemd-analyze verify reports problems on stderr but may still exit 0
  # (e.g. unknown keys), so any output counts as a failure.
  systemd-analyze verify "$SCRATCH/systemd/hookrelay.service" > "$SCRATCH/verify.log" 2>&1 \
    || { cat "$SCRATCH/verify.log"; return 1; }
  if [[ -s "$SCRATCH/verify.log" ]]; then cat "$SCRATCH/verify.log"; return 1; fi
  echo "systemd-analyze verify: no findings"
  # Offline security score (systemd >= 250). Exposure is 0-10 ("1.5 OK");
  # --threshold uses tenths, so 25 fails anything worse than 2.5.
  if systemd-analyze security --help 2>&1 | grep -q -- '--offline'; then
    systemd-analyze security --offline=yes --threshold=25 --no-pager \
      "$SCRATCH/systemd/hookrelay.service" > "$SCRATCH/security.log" 2>&1 \
      || { grep -v '^✓' "$SCRATCH/security.log"; return 1; }
    grep 'Overall exposure' "$SCRATCH/security.log"
  else
    echo "systemd-analyze security --offline not supported here: score skipped"
  fi
}

echo "Validating $DEPLOY_DIR"
run_check "yaml: every YAML file parses" check_yaml
run_check "toml: configs parse, env: references provided" check_toml
run_check "dashboard: Grafana JSON structure" check_dashboard
run_check "promql: dashboard queries parse (promtool)" check_promql
run_check "rules: promtool check rules" check_rules
run_check "rule-tests: promtool test rules" check_rule_tests
run_check "metrics: only contract metrics, all shown" check_metrics
run_check "kubernetes: manifests consistent" check_kubernetes
run_check "kustomize: base renders" check_kustomize
run_check "container: Containerfile and compose.yaml" check_container
run_check "systemd: unit verifies" check_systemd

if [[ -n "$METRIC_NAMES_OUT" ]]; then
  if [[ -f "$SCRATCH/metric-names" ]]; then
    if [[ "$METRIC_NAMES_OUT" == "-" ]]; then
      cat "$SCRATCH/metric-names"
    else
      cp "$SCRATCH/metric-names" "$METRIC_NAMES_OUT"
      echo "metric names written to $METRIC_NAMES_OUT"
    fi
  else
    echo "validate.sh: no metric names to write (the metrics check did not run)" >&2
    FAILED=$((FAILED + 1))
  fi
fi

echo "validate.sh: $PASSED passed, $FAILED failed, $SKIPPED skipped"
((FAILED == 0))
