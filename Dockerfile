# All six binaries in one small image; pick one with the container command
# (/usr/local/bin/producer, worker, sink, api, export or webhooks).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p producer -p worker -p sink -p api -p export -p webhooks \
 && mkdir /out && cp target/release/producer target/release/worker target/release/sink \
    target/release/api target/release/export target/release/webhooks /out/

# distroless: no shell, no package manager; glibc and CA certificates for TLS to the API
# server and PostgreSQL.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 9090 8080
ENTRYPOINT []
