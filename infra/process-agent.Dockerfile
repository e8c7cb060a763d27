# syntax=docker/dockerfile:1
# A process agent's image: your agent directory and its command, a Python base, and the
# `switchboard` binary as the entry point. One ECS/Fargate task per session runs
# `switchboard task`, which starts your command as its child and supervises it (lease,
# close, idle and duration limits, metrics; docs/process-agents.md).
#
#   docker buildx build --platform linux/arm64 -f infra/process-agent.Dockerfile \
#     --build-arg AGENT_DIR=examples/python-agent \
#     --build-arg AGENT_COMMAND='["python3","/agent/agent.py"]' -t my-agent .
#
# AGENT_DIR is copied to /agent (a requirements.txt there is installed); AGENT_COMMAND is a
# JSON array (SWITCHBOARD_AGENT_COMMAND). The platform must match the task definition's
# `AgentCpuArchitecture` (ARM64 by default in template.yaml); deploy with `AgentImage` set to
# this image. The task definition's command is `task`, as for agent binaries.

ARG RUST_VERSION=1.95
ARG PYTHON_VERSION=3.12

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchboard-cli --features aws --bin switchboard \
    && cp target/release/switchboard /switchboard

# The same Debian release as the build stage: the binary's glibc is the base's.
FROM python:${PYTHON_VERSION}-slim-bookworm
ARG AGENT_DIR=examples/python-agent
ARG AGENT_COMMAND='["python3","/agent/agent.py"]'
WORKDIR /agent
COPY clients/python/switchboard_agent.py /opt/switchboard/
COPY ${AGENT_DIR}/ /agent/
RUN if [ -f requirements.txt ]; then pip install --no-cache-dir --requirement requirements.txt; fi
COPY --from=build /switchboard /usr/local/bin/switchboard
# The task definition sets ReadonlyRootFilesystem: no .pyc files, unbuffered logs.
ENV PYTHONPATH=/opt/switchboard \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SWITCHBOARD_LOG_FORMAT=json \
    SWITCHBOARD_AGENT_COMMAND=${AGENT_COMMAND}
# Numeric: the runtime need not resolve a name; nobody in the base image.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["task"]
