#!/usr/bin/env bash
# The serverless stack on this machine, no AWS account (README, docs/serverless.md):
#
#   - moto (DynamoDB + ECS) on 127.0.0.1:$MOTO_PORT, with the sessions table, the agents'
#     cluster and task definition as template.yaml declares them;
#   - the `api` and `reaper` functions under `cargo lambda watch` on 127.0.0.1:$PORT (each
#     function's own settings in functions/Cargo.toml's package.metadata.lambda);
#   - the local ECS (switchboard-local-ecs): it runs the agent process of every task the api
#     starts, after PROVISIONING_SECONDS, stops it as StopTask does, and hands the reaper
#     the ECS Task State Change events (LOCAL_ECS_EVENTS=0: none) and its schedule (every
#     SWEEP_SECONDS);
#   - the session events (EVENTS=1): the `events` function on the table's stream, putting
#     them on moto's default EventBridge bus; with WEBHOOK_URL and WEBHOOK_SECRET (whsec_...)
#     also on a webhook FIFO queue that the `webhooks` function delivers, signed, to
#     WEBHOOK_URL (a failed delivery is retried after WEBHOOK_RETRY_SECONDS, 5; after
#     WEBHOOK_MAX_RECEIVES, 5, it goes to the dead-letter queue). The event source mappings
#     are infra/local_event_sources.py.
#
# It prints `switchboard: ready at http://127.0.0.1:$PORT/lambda-url/api` once the api's
# /ready answers 200, and stops everything it started on Ctrl-C or SIGTERM.
#
# Settings (environment): PORT (9000), MOTO_PORT (5050), MOTO_HOST (127.0.0.1), TABLE, CLUSTER, RELEASE=1 (optimized
# builds), PROVISIONING_SECONDS (0), SWEEP_SECONDS (60), LOCAL_ECS_EVENTS (1), AGENT (the
# tasks' binary; default the demo agent, or the switchboard binary when
# SWITCHBOARD_AGENT_COMMAND is set: a process agent, e.g. '["python3","examples/python-agent/agent.py"]',
# with SWITCHBOARD_AGENT_CLOSE_GRACE_SECONDS and SWITCHBOARD_AGENT_MEMORY_LIMIT_MB), LOGS (target/local-stack), WARM_POOL_SIZE (0: the
# idle warm standbys to keep; PROVISIONING_SECONDS applies to them too), every SWITCHBOARD_*
# launcher setting (passed to both functions; the api hands the agents theirs), EVENTS (1),
# WEBHOOK_URL and WEBHOOK_SECRET (none), WEBHOOK_RETRY_SECONDS (5), WEBHOOK_MAX_RECEIVES (5).
# EMULATOR=external with AWS_ENDPOINT_URL set uses an emulator you already run instead of
# starting moto; LOCAL_ECS=0 when that emulator runs the tasks itself. BIN_DIR names a folder
# with the agent, the local ECS and switchboard-dynamodb already built (the tests' copies).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-9000}
MOTO_PORT=${MOTO_PORT:-5050}
# 0.0.0.0 lets a container reach moto (sam local start-api, README); loopback by default.
MOTO_HOST=${MOTO_HOST:-127.0.0.1}
TABLE=${TABLE:-switchboard-local}
CLUSTER=${CLUSTER:-switchboard-local}
EMULATOR=${EMULATOR:-moto}
LOCAL_ECS=${LOCAL_ECS:-1}
LOGS=${LOGS:-target/local-stack}
export PROVISIONING_SECONDS=${PROVISIONING_SECONDS:-0}
export SWEEP_SECONDS=${SWEEP_SECONDS:-60}
export LOCAL_ECS_EVENTS=${LOCAL_ECS_EVENTS:-1}
WARM_POOL_SIZE=${WARM_POOL_SIZE:-0}
EVENTS=${EVENTS:-1}
WEBHOOK_URL=${WEBHOOK_URL:-}
WEBHOOK_RETRY_SECONDS=${WEBHOOK_RETRY_SECONDS:-5}
WEBHOOK_MAX_RECEIVES=${WEBHOOK_MAX_RECEIVES:-5}

say() { echo "==> $*"; }
fail() { echo "switchboard: $*" >&2; exit 1; }
# 0/1 switches: 1, true, yes, on turn one on; 0, false, no, off (or empty) turn it off.
flag() {
    case "${1,,}" in
        1 | true | yes | on) echo 1 ;;
        "" | 0 | false | no | off) echo 0 ;;
        *) fail "$2 must be 0 or 1, not $1" ;;
    esac
}
RELEASE=$(flag "${RELEASE:-0}" RELEASE)
LOCAL_ECS=$(flag "$LOCAL_ECS" LOCAL_ECS)
LOCAL_ECS_EVENTS=$(flag "$LOCAL_ECS_EVENTS" LOCAL_ECS_EVENTS)
export LOCAL_ECS_EVENTS
EVENTS=$(flag "$EVENTS" EVENTS)
if [[ -n "$WEBHOOK_URL" ]]; then
    [[ "$EVENTS" == 1 ]] || fail "WEBHOOK_URL needs EVENTS=1 (the webhooks come from the events)"
    [[ "${WEBHOOK_SECRET:-}" == whsec_* ]] || fail "WEBHOOK_URL needs WEBHOOK_SECRET (whsec_ followed by base64; webhooks are signed)"
    [[ "$WEBHOOK_RETRY_SECONDS" =~ ^[0-9]+$ ]] || fail "WEBHOOK_RETRY_SECONDS must be a whole number, not $WEBHOOK_RETRY_SECONDS"
    [[ "$WEBHOOK_MAX_RECEIVES" =~ ^[1-9][0-9]*$ ]] || fail "WEBHOOK_MAX_RECEIVES must be a whole number from 1, not $WEBHOOK_MAX_RECEIVES"
fi
[[ "$RELEASE" == 1 ]] && release=(--release) || release=()

[[ "$WARM_POOL_SIZE" =~ ^[0-9]+$ ]] && (( 10#$WARM_POOL_SIZE <= 100 )) \
    || fail "WARM_POOL_SIZE must be a whole number 0-100, not $WARM_POOL_SIZE"

case "$EMULATOR" in
    moto) ;;
    external) [[ -n "${AWS_ENDPOINT_URL:-}" ]] || fail "EMULATOR=external needs AWS_ENDPOINT_URL (the emulator's address)" ;;
    *) fail "EMULATOR must be moto or external, not $EMULATOR" ;;
esac

# Each process runs in a session of its own (setsid) and is stopped with its whole group,
# the last started first: the local ECS drains the agents while the table is still there.
# Whatever is left in that session after the grace (the agents run in process groups of
# their own inside the local ECS's session) is killed by session id.
GROUPS_STARTED=()
stop_all() {
    trap '' INT TERM   # a second Ctrl-C must not cut the stop short
    trap - EXIT
    local i pg
    for ((i = ${#GROUPS_STARTED[@]} - 1; i >= 0; i--)); do
        pg=${GROUPS_STARTED[i]}
        kill -TERM -- "-$pg" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 -- "-$pg" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pg" 2>/dev/null || true
        pkill -KILL -s "$pg" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    echo "switchboard: stopped"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Only what the local stack needs (moto, cargo-lambda) in the project-local .venv; the test
# command's full toolchain there has them too.
local_want=$(sha256sum infra/requirements-local.txt | cut -d' ' -f1)
full_want=$(cat scripts/requirements-test.txt infra/requirements-local.txt | sha256sum | cut -d' ' -f1)
if [[ -x .venv/bin/pip \
    && ( "$(cat .venv/.requirements.sha256 2>/dev/null)" == "$full_want" \
      || "$(cat .venv/.local.sha256 2>/dev/null)" == "$local_want" ) ]]; then
    :
else
    say "installing moto and cargo-lambda into .venv (once, about a minute)"
    if [[ ! -x .venv/bin/pip ]]; then
        rm -rf .venv
        python3 -m venv .venv || { rm -rf .venv; fail "python3 -m venv failed (Debian/Ubuntu: apt install python3-venv)"; }
    fi
    .venv/bin/pip install --disable-pip-version-check --quiet -r infra/requirements-local.txt \
        || fail "pip could not install infra/requirements-local.txt"
    echo "$local_want" > .venv/.local.sha256
fi
export PATH="$PWD/.venv/bin:$PATH"

profile=debug
if [[ "$RELEASE" == 1 ]]; then profile=release; fi

# Ports in use (often a previous run's processes): say so before building anything.
port_free() { .venv/bin/python -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$1" 2>/dev/null; }
port_free "$PORT" || fail "port $PORT is in use (a previous run still going?); PORT=... picks another"
if [[ "$EMULATOR" == moto ]]; then
    port_free "$MOTO_PORT" || fail "port $MOTO_PORT is in use (a previous run's moto?); MOTO_PORT=... picks another"
fi
# The functions exactly as `cargo lambda watch -p switchboard-functions` runs them, so its
# first invocation finds them built.
say "building the functions (api, reaper, events, webhooks; the first build takes a few minutes)"
cargo build "${release[@]}" --locked -p switchboard-functions --bins
if [[ -n "${BIN_DIR:-}" ]]; then
    bin=$BIN_DIR
else
    if [[ -n "${AGENT:-}" ]]; then
        say "building the local ECS and switchboard-dynamodb (the tasks run $AGENT)"
        cargo build "${release[@]}" --locked -p switchboard-local-ecs -p switchboard-aws --bins
    elif [[ -n "${SWITCHBOARD_AGENT_COMMAND:-}" ]]; then
        say "building the switchboard binary (process agents: $SWITCHBOARD_AGENT_COMMAND), the local ECS and switchboard-dynamodb"
        cargo build "${release[@]}" --locked -p switchboard-cli --features switchboard-cli/aws \
            -p switchboard-local-ecs -p switchboard-aws --bins
    else
        say "building the agent (demo-agent with its aws feature), the local ECS and switchboard-dynamodb"
        cargo build "${release[@]}" --locked -p demo-agent --features demo-agent/aws \
            -p switchboard-local-ecs -p switchboard-aws --bins
    fi
    bin=target/$profile
fi
if [[ -z "${AGENT:-}" && -n "${SWITCHBOARD_AGENT_COMMAND:-}" ]]; then
    AGENT=$bin/switchboard
fi
AGENT=${AGENT:-$bin/demo-agent}
[[ -x "$AGENT" ]] || fail "the agent binary $AGENT does not exist"

mkdir -p "$LOGS"
if [[ "$EMULATOR" == moto ]]; then
    endpoint="http://127.0.0.1:$MOTO_PORT"
    say "starting moto on $endpoint (log: $LOGS/moto.log)"
    setsid .venv/bin/python infra/moto_server.py "$MOTO_HOST" "$MOTO_PORT" > "$LOGS/moto.log" 2>&1 &
    GROUPS_STARTED+=($!)
    moto_up=""
    for _ in $(seq 1 300); do
        if .venv/bin/python -c "import urllib.request; urllib.request.urlopen('$endpoint/moto-api/', timeout=1)" 2>/dev/null; then
            moto_up=1
            break
        fi
        kill -0 "${GROUPS_STARTED[-1]}" 2>/dev/null || { cat "$LOGS/moto.log"; fail "moto exited (is port $MOTO_PORT free? MOTO_PORT=... picks another)"; }
        sleep 0.1
    done
    [[ -n "$moto_up" ]] || { cat "$LOGS/moto.log"; fail "moto did not answer on $endpoint within 30 s"; }
else
    endpoint=$AWS_ENDPOINT_URL
    say "using the emulator at $endpoint"
fi

# moto: its region and dummy credentials, whatever the user's shell has (real keys must
# never reach a command line here). An external emulator keeps what the user set.
if [[ "$EMULATOR" == moto ]]; then
    export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
    unset AWS_SESSION_TOKEN AWS_PROFILE
fi
export AWS_ENDPOINT_URL=$endpoint AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-testing} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-testing}
unset SUBNET TASK_DEFINITION
setup=$(.venv/bin/python infra/moto_setup.py "$endpoint" --cluster "$CLUSTER") \
    || fail "setting up the cluster and task definition at $endpoint failed"
eval "$setup"
"$bin/switchboard-dynamodb" create-table "$TABLE" > /dev/null \
    || fail "creating the table $TABLE failed (with EMULATOR=external it may exist already: TABLE=... picks another)"
say "table $TABLE, cluster $CLUSTER, task definition $TASK_DEFINITION, subnet $SUBNET, warm pool $WARM_POOL_SIZE"
events_env=(--env-var "EVENT_BUS_NAME=default" --env-var "METRICS_NAMESPACE=Switchboard/local")
WEBHOOK_QUEUE_URL=""
if [[ -n "$WEBHOOK_URL" ]]; then
    hooks=$(.venv/bin/python infra/webhook_setup.py "$endpoint" "$TABLE" "$WEBHOOK_RETRY_SECONDS" "$WEBHOOK_MAX_RECEIVES") \
        || fail "creating the webhook queue and secret at $endpoint failed"
    eval "$hooks"
    events_env+=(--env-var "WEBHOOK_QUEUE_URL=$WEBHOOK_QUEUE_URL" --env-var "WEBHOOK_URL=$WEBHOOK_URL"
        --env-var "WEBHOOK_SECRET_ARN=$WEBHOOK_SECRET_ARN")
    say "webhooks to $WEBHOOK_URL through $WEBHOOK_QUEUE_URL (dead letters: $WEBHOOK_DLQ_URL)"
fi

# Every SWITCHBOARD_* launcher setting to both functions (the api puts the agents' in each
# task's container override); the global limit defaults to 10 here. A process agent's own
# settings are the tasks' (the image's and the task definition's), not the functions'.
env_args=()
while IFS='=' read -r name value; do
    env_args+=(--env-var "$name=$value")
done < <(env | grep '^SWITCHBOARD_' | grep -v '^SWITCHBOARD_TEST_' \
    | grep -v -E '^SWITCHBOARD_(AGENT_COMMAND|AGENT_CLOSE_GRACE_SECONDS|AGENT_MEMORY_LIMIT_MB|PREWARM)=' || true)
if [[ -z "${SWITCHBOARD_MAX_CONCURRENT_SESSIONS:-}" ]]; then
    env_args+=(--env-var "SWITCHBOARD_MAX_CONCURRENT_SESSIONS=10")
fi

say "starting cargo lambda watch on 127.0.0.1:$PORT: api, reaper, events, webhooks (log: $LOGS/lambda.log)"
# --disable-cors: the function answers CORS itself, as behind the HTTP API (the template
# declares none there); watch's own layer would add a second `vary` to every response.
# No --timeout: watch applies it to every request of its runtime API too, so an idle
# function's long poll for its next invocation got a 408 after it, without the request id
# header, and lambda_runtime panicked (the api died after 60 s without requests).
setsid cargo lambda watch --disable-cors -A 127.0.0.1 -P "$PORT" \
    "${release[@]}" -p switchboard-functions \
    --env-var "TABLE_NAME=$TABLE" \
    --env-var "ECS_CLUSTER=$CLUSTER" \
    --env-var "TASK_DEFINITION=$TASK_DEFINITION" \
    --env-var "SUBNETS=$SUBNET" \
    --env-var "WARM_POOL_SIZE=$WARM_POOL_SIZE" \
    --env-var "AWS_ENDPOINT_URL=$endpoint" \
    --env-var "AWS_REGION=$AWS_REGION" \
    --env-var "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID" \
    --env-var "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY" \
    "${events_env[@]}" "${env_args[@]}" > "$LOGS/lambda.log" 2>&1 &
GROUPS_STARTED+=($!)
watch_pid=$!

http() {
    .venv/bin/python - "$@" <<'PY'
import sys, urllib.request
method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)
PY
}

base="http://127.0.0.1:$PORT"
for i in $(seq 1 600); do
    kill -0 "$watch_pid" 2>/dev/null || { tail -20 "$LOGS/lambda.log"; fail "cargo lambda watch exited (is port $PORT free? PORT=... picks another)"; }
    [[ "$(http GET "$base/lambda-url/api/ready")" == 200 ]] && break
    (( i % 50 == 0 )) && say "waiting for the api to answer /ready (log: $LOGS/lambda.log)"
    sleep 0.2
done
[[ "$(http GET "$base/lambda-url/api/ready")" == 200 ]] || fail "the api never answered /ready"
# The reaper's first invocation starts its process (one sweep: harmless on a new table).
[[ "$(http POST "$base/2015-03-31/functions/reaper/invocations" "$(cat infra/events/eventbridge-schedule.json)")" == 200 ]] \
    || fail "the reaper did not answer its first invocation (log: $LOGS/lambda.log)"

if [[ "$LOCAL_ECS" != 0 ]]; then
    say "starting the local ECS: provisioning ${PROVISIONING_SECONDS}s, sweep every ${SWEEP_SECONDS}s, events $([[ "$LOCAL_ECS_EVENTS" == 0 ]] && echo off || echo on); task logs in $LOGS/tasks"
    ready_file="$LOGS/local-ecs.ready"
    rm -f "$ready_file"
    # The tests' and the bench's call recording reaches the tasks too (Fargate would not
    # pass the caller's environment; this is a test aid).
    record=()
    [[ -n "${SWITCHBOARD_RECORD_AWS_CALLS:-}" ]] && record=(--env "SWITCHBOARD_RECORD_AWS_CALLS=$SWITCHBOARD_RECORD_AWS_CALLS")
    # A process agent's settings, as its image (SWITCHBOARD_AGENT_COMMAND) and the task
    # definition (the grace, the memory limit) would set them.
    for name in SWITCHBOARD_AGENT_COMMAND SWITCHBOARD_AGENT_CLOSE_GRACE_SECONDS SWITCHBOARD_AGENT_MEMORY_LIMIT_MB; do
        if [[ -n "${!name:-}" ]]; then record+=(--env "$name=${!name}"); fi
    done
    setsid "$bin/switchboard-local-ecs" --endpoint "$endpoint" --cluster "$CLUSTER" \
        --agent "$AGENT" --lambda-url "$base" --logs "$LOGS/tasks" --ready-file "$ready_file" "${record[@]}" &
    GROUPS_STARTED+=($!)
    local_ecs_pid=$!
    for _ in $(seq 1 300); do
        [[ -e "$ready_file" ]] && break
        kill -0 "$local_ecs_pid" 2>/dev/null || fail "the local ECS exited"
        sleep 0.1
    done
    [[ -e "$ready_file" ]] || fail "the local ECS did not start watching within 30 s"
fi

if [[ "$EVENTS" != 0 ]]; then
    say "starting the event source mappings: the stream to events$([[ -n "$WEBHOOK_URL" ]] && echo ", the webhook queue to webhooks") (log: $LOGS/event-sources.log)"
    sources_ready="$LOGS/event-sources.ready"
    rm -f "$sources_ready"
    queue_arg=()
    [[ -n "$WEBHOOK_QUEUE_URL" ]] && queue_arg=(--webhook-queue-url "$WEBHOOK_QUEUE_URL")
    setsid .venv/bin/python infra/local_event_sources.py --endpoint "$endpoint" --lambda-url "$base" \
        --table "$TABLE" --logs "$LOGS" --ready-file "$sources_ready" "${queue_arg[@]}" \
        > "$LOGS/event-sources.log" 2>&1 &
    GROUPS_STARTED+=($!)
    sources_pid=$!
    for _ in $(seq 1 300); do
        [[ -e "$sources_ready" ]] && break
        kill -0 "$sources_pid" 2>/dev/null || { cat "$LOGS/event-sources.log"; fail "the event source mappings exited"; }
        sleep 0.1
    done
    [[ -e "$sources_ready" ]] || fail "the event source mappings did not start within 30 s"
fi

echo "switchboard: ready at $base/lambda-url/api"
# Until one of them ends (or a signal): then everything stops.
wait -n "${GROUPS_STARTED[@]}" || true
echo "switchboard: a process of the stack exited; stopping the rest" >&2
exit 1
