# One image for every Gatehouse node: control, token-service, gateway, the two demo
# backends, and `gatehouse` (all-in-one, bootstrap, healthcheck).
#
#   docker build -t gatehouse .
#   docker run --rm -p 8243:8243 -p 9443:9443 -p 50051:50051 gatehouse gatehouse up --data-dir /data --listen-all
#
# /pki and /secrets are owned by the image's user, so the named volumes compose mounts
# there start writable by it (the certificates and the generated admin secret).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin gatehouse --bin control --bin token-service --bin gateway \
        --bin client-service --bin order-service \
 && mkdir -p /out \
 && cp target/release/gatehouse target/release/control target/release/token-service \
       target/release/gateway target/release/client-service target/release/order-service /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data gatehouse \
 && mkdir -p /data /pki /secrets && chown gatehouse /data /pki /secrets \
 && chmod 700 /secrets
COPY --from=build /out/ /usr/local/bin/
USER gatehouse
WORKDIR /data
ENV GATEHOUSE_DATA_DIR=/data
CMD ["gatehouse", "up", "--data-dir", "/data", "--listen-all"]
