# syntax=docker/dockerfile:1
# hoard as a container image: built with cargo, run on debian:bookworm-slim as the non-root user
# hoard (uid 10001), with its CA and cache on volumes.
#
#   docker build -t hoard .
#   docker run -d --name hoard -p 127.0.0.1:3128:3128 \
#     -v hoard-ca:/var/lib/hoard/ca -v hoard-cache:/var/lib/hoard/cache hoard
#   curl http://127.0.0.1:3128/ca.crt
#
# The config is /etc/hoard/config.toml (contrib/config.toml): it listens on 0.0.0.0:3128 and
# serves only clients from loopback and the private address ranges (proxy.allow_clients). Mount
# your own over it to change that: -v ./config.toml:/etc/hoard/config.toml:ro

# The builder is on the same Debian release as the runtime image, so the binary finds the glibc
# it was linked against.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hoard \
    && install -m 0755 target/release/hoard /usr/local/bin/hoard

FROM debian:bookworm-slim
# ca-certificates: the system store hoard trusts for upstream TLS (besides its built-in roots);
# curl: the health check; tini: PID 1, so that SIGTERM reaches hoard (the kernel drops signals
# sent to a PID 1 that has no handler for them). Unpinned on purpose: a rebuild gets the
# security updates of the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 hoard \
    && useradd --system --uid 10001 --gid hoard --home-dir /var/lib/hoard \
       --no-create-home --shell /usr/sbin/nologin hoard \
    && install -d -o hoard -g hoard -m 0750 /var/lib/hoard /var/lib/hoard/cache \
    && install -d -o hoard -g hoard -m 0700 /var/lib/hoard/ca
COPY --from=builder /usr/local/bin/hoard /usr/local/bin/hoard
COPY contrib/config.toml /etc/hoard/config.toml

# Read by every subcommand, so `docker exec hoard hoard cache ls` needs no --config.
ENV HOARD_CONFIG=/etc/hoard/config.toml
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/hoard
VOLUME ["/var/lib/hoard/ca", "/var/lib/hoard/cache"]
EXPOSE 3128
# /healthz on the proxy port answers clients in proxy.allow_clients (loopback is in the shipped
# config). --noproxy: never send the check through a proxy set in the container's environment.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "--noproxy", "*", "-o", "/dev/null", "http://127.0.0.1:3128/healthz"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/hoard"]
CMD ["serve"]
