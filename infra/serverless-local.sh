#!/usr/bin/env bash
# The serverless stack on this machine, no AWS account: moto (DynamoDB + ECS) on 127.0.0.1,
# the sessions table and the agents' cluster created as template.yaml declares them, and the
# `api` function under `cargo lambda watch` on http://127.0.0.1:${PORT:-9000}/lambda-url/api/.
# Ctrl-C stops everything it started. RELEASE=1 builds the function with optimizations (for
# `switchboard-bench --url`, docs/benchmarks.md); MAX_CONCURRENT_SESSIONS sets the global limit.
#
# moto records each RunTask but runs no container: sessions stay `starting` until an agent
# task reports in (see docs/serverless.md).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-9000}
MOTO_PORT=${MOTO_PORT:-5050}
TABLE=${TABLE:-switchboard-local}
CLUSTER=${CLUSTER:-switchboard-local}

# The same pinned tools as the test command, in the project-local .venv.
stamp=.venv/.requirements.sha256
want=$(sha256sum scripts/requirements-test.txt | cut -d' ' -f1)
if [[ ! -x .venv/bin/python || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "==> installing the Python tools into .venv"
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
    echo "$want" > "$stamp"
fi

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

mkdir -p target
(exec .venv/bin/python infra/moto_server.py 127.0.0.1 "$MOTO_PORT" > target/moto-local.log 2>&1) &
PIDS+=($!)
endpoint="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 1 100); do
    .venv/bin/python -c "import urllib.request; urllib.request.urlopen('$endpoint/moto-api/', timeout=1)" 2>/dev/null && break
    sleep 0.1
done
echo "==> moto on $endpoint (log: target/moto-local.log)"

export AWS_ENDPOINT_URL=$endpoint AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
eval "$(.venv/bin/python infra/moto_setup.py "$endpoint" --cluster "$CLUSTER")"
cargo run --quiet -p switchboard-aws --bin switchboard-dynamodb -- create-table "$TABLE"
echo "==> table $TABLE, cluster $CLUSTER, task definition $TASK_DEFINITION"

echo "==> cargo lambda watch on http://127.0.0.1:$PORT/lambda-url/api/ (builds the function on start)"
# --disable-cors: the function answers CORS itself, as behind the HTTP API (the template
# declares none there); watch's own layer would add a second `vary` to every response.
(exec env PATH="$PWD/.venv/bin:$PATH" cargo lambda watch --wait --disable-cors -A 127.0.0.1 -P "$PORT" \
    ${RELEASE:+--release} --bin api \
    --env-var "TABLE_NAME=$TABLE" \
    --env-var "ECS_CLUSTER=$CLUSTER" \
    --env-var "TASK_DEFINITION=$TASK_DEFINITION" \
    --env-var "SUBNETS=$SUBNET" \
    --env-var "SECURITY_GROUPS=sg-0123456789abcdef0" \
    --env-var "SWITCHBOARD_MAX_CONCURRENT_SESSIONS=${MAX_CONCURRENT_SESSIONS:-10}" \
    --env-var "AWS_ENDPOINT_URL=$endpoint" \
    --env-var "AWS_REGION=us-east-1" \
    --env-var "AWS_ACCESS_KEY_ID=testing" \
    --env-var "AWS_SECRET_ACCESS_KEY=testing") &
PIDS+=($!)
wait "${PIDS[-1]}"
