#!/bin/sh
# Builds golang-migrate's `migrate` CLI (postgres driver, file source) into
# ~/go/bin/migrate, where bench/bench_golang_migrate.py looks for it.
#
#   bench/build_golang_migrate.sh            # go install through the Go module proxy
#   bench/build_golang_migrate.sh SRC [TAG]  # offline, from a git checkout of
#                                            # github.com/golang-migrate/migrate
#
# The offline build uses GOPATH mode and Debian's packages for the only three
# dependencies the postgres build needs (lib/pq, go-multierror, go.uber.org/atomic),
# so it works with Debian's Go (1.19) and without the module proxy.
set -eu

VERSION="${2:-v4.18.1}"
BIN="${HOME}/go/bin"
mkdir -p "$BIN"

need_go() {
    command -v go >/dev/null 2>&1 && return
    DEBIAN_FRONTEND=noninteractive apt-get install -y golang-go
}

if [ $# -eq 0 ]; then
    need_go
    GOPATH="${HOME}/go" GOFLAGS=-mod=mod \
        go install -tags postgres "github.com/golang-migrate/migrate/v4/cmd/migrate@${VERSION}"
else
    SRC="$1"
    need_go
    DEBIAN_FRONTEND=noninteractive apt-get install -y \
        golang-github-lib-pq-dev golang-github-hashicorp-go-multierror-dev golang-go.uber-atomic-dev
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    PKG="$WORK/src/github.com/golang-migrate/migrate/v4"
    mkdir -p "$PKG"
    git -C "$SRC" archive "$VERSION" | tar -x -C "$PKG"
    rm -f "$PKG/go.mod" "$PKG/go.sum"
    (cd "$PKG" && GO111MODULE=off GOPATH="$WORK:/usr/share/gocode" \
        go build -tags postgres -ldflags "-X main.Version=${VERSION}" -o "$BIN/migrate" ./cmd/migrate)
fi
"$BIN/migrate" -version
