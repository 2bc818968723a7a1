# credport's image: the daemon (`serve`) for a Linux engine's credentials network, and the
# relay (`relay`) that every engine, Docker Desktop included, runs at 169.254.170.2.
# See README "Dev containers" for the walkthroughs; tests/docker.rs builds this file's last
# stage on an offline Debian bookworm base with the binary under test and runs them.
#
#   docker build -t credport .
#
# The relay (holds no secret; the daemon on the host checks every token):
#   docker network create --subnet 169.254.170.0/24 credport
#   docker run -d --name credport-relay --restart unless-stopped --network credport \
#     --ip 169.254.170.2 --add-host host.docker.internal:host-gateway --read-only \
#     credport relay --upstream http://host.docker.internal:9911
#
# The daemon itself in a container, as the user who owns ~/.aws (0600 files are readable
# by their owner only, so the image's default uid 65532 cannot read them):
#   docker run -d --name credport --network credport --ip 169.254.170.2 \
#     --user "$(id -u):$(id -g)" --read-only --tmpfs /tmp \
#     -v ~/.aws:/home/credport/.aws:ro \
#     -v ~/.config/credport:/home/credport/.config/credport:ro \
#     -v ~/.local/share/credport:/home/credport/.local/share/credport:ro \
#     credport serve --listen 169.254.170.2:80 --allow-non-loopback
#
# The state mount holds the token key, so tokens match `credport token` on the host.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/credport

FROM debian:bookworm-slim
# CA certificates: profiles that call STS or SSO need TLS.
RUN [ -s /etc/ssl/certs/ca-certificates.crt ] || { apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*; }
COPY --from=build /src/target/release/credport /usr/local/bin/credport
ENV HOME=/home/credport CREDPORT_RUNTIME_DIR=/tmp/credport RUST_LOG=credport=info
USER 65532:65532
EXPOSE 80
ENTRYPOINT ["/usr/local/bin/credport"]
CMD ["serve", "--listen", "169.254.170.2:80", "--allow-non-loopback"]
