# syntax=docker/dockerfile:1
# The agent image: one ECS/Fargate task per session runs `<agent binary> task`.
#
#   docker buildx build --platform linux/arm64 -f infra/agent-task.Dockerfile -t switchboard-agent .
#
# For your own agent binary (a crate in this workspace whose main calls
# `Runner::new(builder).cli()` and has an `aws` feature enabling `switchboard/aws`, as
# demo-agent does):
#
#   docker buildx build --build-arg PACKAGE=my-agent --build-arg BIN=my-agent ...
#
# The platform must match the task definition's `AgentCpuArchitecture` (ARM64 by default in
# template.yaml). The entry point's default command is `task`, which is also what the task
# definition runs; every setting comes from the environment the RunTask override sets.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
ARG PACKAGE=demo-agent
ARG BIN=demo-agent
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p "${PACKAGE}" --features aws --bin "${BIN}" \
    && cp "target/release/${BIN}" /agent

# glibc + libgcc, no shell, runs as uid 65532 (nonroot); works with a read-only root file
# system (the task definition sets ReadonlyRootFilesystem).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /agent /usr/local/bin/agent
# 65532 is distroless's nonroot; numeric, so the runtime need not resolve the name.
USER 65532:65532
ENV SWITCHBOARD_LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/agent"]
CMD ["task"]
