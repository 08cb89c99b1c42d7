# syntax=docker/dockerfile:1.7
# beat-gateway image: build with Rust + cmake, run as a non-root user on a slim Debian.
#   docker build -t localhost/beat-gateway:1.0.0 .

FROM docker.io/library/rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
# Pingora's crates as published plus the gateway's patches (`[patch.crates-io]`, vendor/README.md).
COPY vendor ./vendor
# The registry and target directory live in build caches, so a rebuild after a source
# change recompiles only this crate, not Pingora and the rest of the dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D target/release/beat-gateway /out/beat-gateway

FROM docker.io/library/debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
WORKDIR /app
COPY --from=builder /out/beat-gateway /usr/local/bin/beat-gateway
COPY config ./config
ENV PROXY_HOST=0.0.0.0 \
    PROXY_PORT=9000 \
    PROXY_GRACE_SECONDS=3 \
    RUST_LOG=info
USER 10001:10001
EXPOSE 9000 9443
# SIGTERM: stop accepting, let in-flight requests finish for PROXY_GRACE_SECONDS, exit.
STOPSIGNAL SIGTERM
# Ready = the admin listener's /readyz answers 200 (the binary asks it itself: no curl here).
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/beat-gateway", "--probe"]
ENTRYPOINT ["/usr/local/bin/beat-gateway"]
CMD ["--services", "/app/config/services.json"]
