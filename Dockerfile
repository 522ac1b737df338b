# syntax=docker/dockerfile:1
# items-api image: a release build on the official Rust image, run on distroless (glibc,
# libgcc, CA certificates, no shell) as a non-root user. See deploy/README.md.
#
#   docker build -t items-api:dev .
#   docker run --rm -p 8000:8000 items-api:dev          # SQLite in the working directory
#
# The toolchain must be at least the newest rust-version of the locked dependencies
# (sqlx 0.9 needs 1.94). Builder and runtime are both Debian 12, so the glibc matches.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only. This layer is rebuilt when Cargo.toml or Cargo.lock change, not
#    when the code does: a placeholder lib and main compile every locked dependency, then
#    the placeholder's own artifacts and fingerprints go, so step 2 rebuilds the crate
#    whatever the mtimes of the copied sources are.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src \
           target/release/.fingerprint/items-api-* \
           target/release/deps/items_api-* \
           target/release/deps/libitems_api-* \
           target/release/items-api* \
           target/release/libitems_api*

# 2. The service itself.
COPY src ./src
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/items-api /out/items-api

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="items-api" \
      org.opencontainers.image.description="Items CRUD API, observable by construction (OpenTelemetry metrics, traces, logs)" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/items-api /usr/local/bin/items-api
# /home/nonroot is writable by the runtime user: the default DATABASE_URL
# (sqlite://items.db?mode=rwc) creates its file here when no PostgreSQL URL is given.
WORKDIR /home/nonroot
USER 65532:65532
ENV LISTEN_ADDR=0.0.0.0:8000 \
    LOG_FORMAT=json
EXPOSE 8000
# Ready = the process answers and the database does (503 otherwise). Distroless has no
# shell or HTTP client: the binary probes itself (`items-api healthcheck` asks
# /health/ready at LISTEN_ADDR, so it follows a changed port).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/items-api", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/items-api"]
