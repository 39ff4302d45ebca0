# speech-gateway container image.
#   docker build -t speech-gateway:0.1.0 .
#   docker run -p 8080:8080 speech-gateway:0.1.0 serve --backend riva://RIVA_HOST:50051
# Two stages: a Rust build of the gateway crate alone (protobuf is compiled by
# crates/proto/build.rs with protox: no protoc), then a small Debian runtime with the one
# binary, running as an unprivileged user. The tools (`sgw`) and the test kit are not built. The
# HEALTHCHECK uses the binary's own `healthcheck` subcommand (the image has no curl).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN cargo build --release --locked -p speech-gateway --bin speech-gateway \
    && strip target/release/speech-gateway

FROM debian:bookworm-slim
# ca-certificates: rivas:// and tritons:// back ends verify TLS with the system's roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin sgw
COPY --from=build /src/target/release/speech-gateway /usr/local/bin/speech-gateway
USER 10001:10001
ENV SGW_LISTEN=0.0.0.0:8080 \
    SGW_LOG_FORMAT=json
EXPOSE 8080
# /health answers 200 while the process runs; drain keeps it up (only /ready turns 503).
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["speech-gateway", "healthcheck", "--url", "http://127.0.0.1:8080/health"]
# SIGTERM drains: /ready 503, live sessions get session.drain_timeout (30 s) then their
# finals; give `docker stop` more than that (docker stop -t 45, or stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["speech-gateway"]
CMD ["serve"]
