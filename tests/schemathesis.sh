#!/usr/bin/env bash
# Fuzz the admin API against its own OpenAPI document with schemathesis.
#
#   bash tests/schemathesis.sh            # builds target/debug/hookrelay first
#   HOOKRELAY_BIN=path/to/hookrelay bash tests/schemathesis.sh
#
# Starts the real binary on a temporary SQLite store (ports chosen by the
# OS), feeds it a few webhooks so lists and messages have content, runs
# `schemathesis run` on /api/v1/openapi.json with the bearer token, stops
# the relay and exits with schemathesis's status (non-zero on any failure:
# a 5xx, an undocumented status code, a body that does not match its schema,
# ...). Bounded: SCHEMATHESIS_EXAMPLES examples per operation (default 40)
# and SCHEMATHESIS_MAX_TIME seconds in all (default 60). A fixed seed
# (SCHEMATHESIS_SEED) keeps CI reproducible; run with other seeds to explore.
#
# Needs: python3 with schemathesis (pip install schemathesis), curl.
# Without schemathesis it exits 0 with a SKIPPED note, unless CI is set.

set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
EXAMPLES="${SCHEMATHESIS_EXAMPLES:-40}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-60}"

if ! command -v schemathesis >/dev/null 2>&1; then
  if [[ -n "${CI:-}" ]]; then
    echo "schemathesis.sh: schemathesis is not installed (pip install schemathesis)" >&2
    exit 1
  fi
  echo "SKIPPED: schemathesis is not installed (pip install schemathesis); set CI=1 to make this a failure"
  exit 0
fi

BIN="${HOOKRELAY_BIN:-}"
if [[ -z "$BIN" ]]; then
  (cd "$ROOT" && cargo build --quiet --bin hookrelay)
  TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  BIN="$TARGET_DIR/debug/hookrelay"
fi
[[ -x "$BIN" ]] || { echo "schemathesis.sh: no executable at $BIN" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/hookrelay-schemathesis.XXXXXX")"
RELAY_PID=""
cleanup() {
  if [[ -n "$RELAY_PID" ]] && kill -0 "$RELAY_PID" 2>/dev/null; then
    kill -TERM "$RELAY_PID" 2>/dev/null || true
    wait "$RELAY_PID" 2>/dev/null || true
  fi
  rm -rf -- "$WORK"
}
trap cleanup EXIT

TOKEN="st-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
SECRET="portal-secret-for-schemathesis"
cat >"$WORK/hookrelay.toml" <<EOF
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
token = "$TOKEN"

[store]
url = "sqlite://$WORK/relay.db"

[delivery]
timeout = "1s"
initial_backoff = "100ms"
max_backoff = "200ms"
max_attempts = 2
poll_interval = "100ms"

[[sources]]
name = "portal"
kind = "arcgis-portal"
secret = "$SECRET"

# Nothing listens on port 1: deliveries fail, retry and go dead.
[[sinks]]
name = "unreachable"
kind = "http"
url = "http://127.0.0.1:1/hook"

[[sinks]]
name = "shares"
kind = "http"
url = "http://127.0.0.1:1/shares"
events = ["/items/share"]
EOF

"$BIN" --config "$WORK/hookrelay.toml" serve >"$WORK/stdout" 2>"$WORK/stderr" &
RELAY_PID=$!

ADMIN="" INGRESS=""
for _ in $(seq 1 300); do
  ADMIN="$(sed -n 's/^hookrelay: admin listening on //p' "$WORK/stdout" | head -n1)"
  INGRESS="$(sed -n 's/^hookrelay: ingress listening on //p' "$WORK/stdout" | head -n1)"
  [[ -n "$ADMIN" && -n "$INGRESS" ]] && break
  kill -0 "$RELAY_PID" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$ADMIN" || -z "$INGRESS" ]]; then
  echo "schemathesis.sh: the relay did not start:" >&2
  cat "$WORK/stderr" >&2
  exit 1
fi
echo "relay: admin $ADMIN, ingress $INGRESS"

# Some content: every fixture once, so messages, deliveries, attempts and
# dead letters exist when schemathesis lists them.
for f in "$ROOT"/tests/fixtures/arcgis/portal-*.json; do
  curl -fsS -o /dev/null -H 'content-type: application/json' -H "secret: $SECRET" \
    --data-binary "@$f" "$INGRESS/hooks/portal"
done
sleep 1

status=0
# From the scratch directory: schemathesis and hypothesis keep caches in the
# working directory, which must not be the repository.
cd "$WORK"
schemathesis run "$ADMIN/api/v1/openapi.json" \
  --url "$ADMIN" \
  --header "Authorization: Bearer $TOKEN" \
  --checks all \
  --max-examples "$EXAMPLES" \
  --max-time "$MAX_TIME" \
  --seed "${SCHEMATHESIS_SEED:-20261122}" \
  --request-timeout 10 \
  --generation-database none \
  --no-color \
  --report junit --report-dir "$WORK/report" \
  || status=$?

if ! kill -0 "$RELAY_PID" 2>/dev/null; then
  echo "schemathesis.sh: the relay died during the run:" >&2
  tail -n 50 "$WORK/stderr" >&2
  status=1
fi
if grep -q '"level":"ERROR"\|ERROR' "$WORK/stderr"; then
  echo "relay errors during the run:"
  grep 'ERROR' "$WORK/stderr" | tail -n 20
fi
exit "$status"
