# credport as a container in a dev-container network, serving 169.254.170.2:80 with the
# host's AWS files mounted read-only. Static binary, non-root, read-only root filesystem.
#
#   docker build -t credport .
#   docker network create --subnet 169.254.170.0/24 credport
#   docker run -d --name credport --network credport --ip 169.254.170.2 --read-only \
#     --tmpfs /run/credport:mode=0700,uid=65532 \
#     -v ~/.aws:/home/credport/.aws:ro \
#     -v ~/.config/credport:/home/credport/.config/credport:ro \
#     -v ~/.local/share/credport:/home/credport/.local/share/credport \
#     credport
#
# The state volume holds the token key, so tokens match `credport token` on the host.
# (No Docker engine runs where credport is developed; this recipe is not exercised by CI.)

FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/credport

FROM scratch
COPY --from=build /src/target/release/credport /credport
ENV HOME=/home/credport CREDPORT_RUNTIME_DIR=/run/credport RUST_LOG=credport=info
USER 65532:65532
EXPOSE 80
ENTRYPOINT ["/credport", "serve", "--listen", "169.254.170.2:80", "--allow-non-loopback"]
