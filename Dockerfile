# syntax=docker/dockerfile:1
#
# outrider's image: one static binary on distroless static, numeric non-root
# user, no shell. The build runs `make outrider`, so the image holds the same
# binary, built with the same flags, as bin/outrider that the tests run.
#
#   docker build -t outrider:dev .                      # the sidecar (default target)
#   docker build --target echo -t outrider-echo:dev .   # the sample app, for deploy/k8s
#
# deploy/dockerfile_test.go parses this file and checks these promises.

# GO_VERSION is go.mod's go directive. The runtime image keeps its tag next
# to the digest; refresh both with
# `crane digest gcr.io/distroless/static-debian12:nonroot`.
ARG GO_VERSION=1.26.7
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639

FROM golang:${GO_VERSION}-trixie AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN make outrider VERSION=${VERSION} COMMIT=${COMMIT} \
 && CGO_ENABLED=0 make echo

FROM ${RUNTIME_IMAGE} AS echo
LABEL org.opencontainers.image.title="outrider-echo" \
      org.opencontainers.image.description="outrider's sample app: a small HTTP server for the demo and deploy/k8s" \
      org.opencontainers.image.source="https://github.com/outrider-sidecar/outrider"
COPY --from=build /src/bin/echo /echo
USER 65532:65532
ENV ECHO_LISTEN=127.0.0.1:8080
ENTRYPOINT ["/echo"]

FROM ${RUNTIME_IMAGE} AS outrider
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="outrider" \
      org.opencontainers.image.description="Sidecar agent: probes an app, registers it in Consul, exports its metrics and drains it on shutdown" \
      org.opencontainers.image.source="https://github.com/outrider-sidecar/outrider" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /src/bin/outrider /outrider
USER 65532:65532
EXPOSE 15001 15090
ENTRYPOINT ["/outrider"]
