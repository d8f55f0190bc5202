# syntax=docker/dockerfile:1
# Switchboard's container image: a static binary on an empty base, run as
# a non-root user, the data directory a volume, /healthz its health check
# (docs/deploy.md). Build with any OCI builder:
#
#   podman build --format docker -t switchboard .      (docker format keeps HEALTHCHECK)
#   docker build -t switchboard .
#
# Checked in CI by cmd/switchboard/deploy_container_test.go, which builds
# this file with podman, starts the image and probes it.

# The Go toolchain image of the build stage; a build without access to
# Docker Hub names a local one (the CI test does).
ARG GO_IMAGE=docker.io/library/golang:1.26-bookworm

FROM ${GO_IMAGE} AS build
# The release's version, commit and date (switchboard version; empty:
# "dev", as in a build from a checkout without its .git).
ARG VERSION
ARG COMMIT
ARG DATE
ENV CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (CGO_ENABLED=0: pure-Go SQLite, no libc), reproducible (-trimpath)
# and stripped (-s -w). The CI test runs this very line on the host too.
RUN go build -trimpath -ldflags "-s -w -X github.com/switchboard-hub/switchboard/internal/buildinfo.version=${VERSION} -X github.com/switchboard-hub/switchboard/internal/buildinfo.commit=${COMMIT} -X github.com/switchboard-hub/switchboard/internal/buildinfo.date=${DATE}" -o /out/switchboard ./cmd/switchboard
# The data directory and a temporary directory, owned by the user below:
# the final image has no shell to make them.
RUN mkdir -p /out/rootfs/var/lib/switchboard /out/rootfs/tmp \
 && chown 65532:65532 /out/rootfs/var/lib/switchboard \
 && chmod 0700 /out/rootfs/var/lib/switchboard \
 && chmod 1777 /out/rootfs/tmp

FROM scratch
# CA certificates for OIDC sign-in and external NATS/PostgreSQL over TLS.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/rootfs/ /
COPY --from=build /out/switchboard /usr/local/bin/switchboard
# 65532: no user of the base or the host; uid and gid only (no /etc/passwd).
USER 65532:65532
ENV SWITCHBOARD_LISTEN=0.0.0.0:8080 \
    SWITCHBOARD_DATA_DIR=/var/lib/switchboard \
    SWITCHBOARD_LOG_FORMAT=json
VOLUME ["/var/lib/switchboard"]
EXPOSE 8080
# The binary probes itself (there is no curl): GET /healthz on
# SWITCHBOARD_LISTEN, exit 0 on 200.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/switchboard", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["serve"]
