# txmsg: `make demo` and `make test` work on a fresh Debian/Ubuntu machine
# with Go installed; both first make sure MariaDB is up (scripts/ensure-mariadb.sh).

GO ?= go
TXMSG_TEST_MYSQL_DSN ?= root@tcp(127.0.0.1:3306)/test?parseTime=true
export TXMSG_TEST_MYSQL_DSN
# VERSION is what `txmsg version` prints.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
# DEMO_ARGS are passed to `txmsg dev`, e.g. DEMO_ARGS="--rate 500 --duration 30s".
DEMO_ARGS ?=
# GOLANGCI_LINT is the pinned linter, installed into bin/ by `make lint`.
GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT := bin/golangci-lint-$(GOLANGCI_LINT_VERSION)
# CHAOS_ARGS are passed to `txmsg-chaos`, e.g. CHAOS_ARGS="--duration 60s".
CHAOS_ARGS ?=

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: build test demo bench bench-live vet lint mariadb chaos

## build: compile bin/txmsg
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/txmsg ./cmd/txmsg

## test: every test, with the race detector, against the local MariaDB
test: mariadb
	$(GO) test -race -count=1 -timeout 15m ./...

## demo: the one-process demo (Ctrl-C stops it)
demo: mariadb
	$(GO) run ./cmd/txmsg dev $(DEMO_ARGS)

## chaos: the chaos soak (see RELIABILITY.md), 5 minutes unless CHAOS_ARGS says
## otherwise; one line of figures, exit status 0 only if nothing was lost,
## phantom, reordered, applied twice or stalled
chaos: mariadb build
	$(GO) build -o bin/txmsg-chaos ./cmd/txmsg-chaos
	bin/txmsg-chaos --txmsg bin/txmsg $(CHAOS_ARGS)

## bench: every benchmark, output in bench.out (see BENCHMARKS.md). Relay,
## consumer and internal/bench benchmarks size themselves (1x); the broker's
## count messages (Nx). internal/bench drives the txmsg relay binary:
## TXMSG_BENCH_RATES (1000,3000), TXMSG_BENCH_SECONDS (30) and
## TXMSG_BENCH_ROWS (100000,400000,1000000) size it.
bench: mariadb
	{ $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 90m ./internal/bench && \
	  $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./relay ./consumer && \
	  $(GO) test -run '^$$' -bench HalfVsPlain -benchtime 2000x -timeout 30m ./broker && \
	  $(GO) test -run '^$$' -bench CommitToKafka -benchtime 3000x -timeout 30m ./broker && \
	  $(GO) test -run '^$$' -bench StrandedCheckback -benchtime 10000x -timeout 30m ./broker; } | tee bench.out

## bench-live: `txmsg bench latency` and `drain` against your own MySQL and
## Kafka (TXMSG_DB_DSN, TXMSG_KAFKA_BROKERS or TXMSG_CONFIG), driving the
## relay binary; BENCH_ARGS adds flags, e.g. BENCH_ARGS="--rate 3000".
BENCH_ARGS ?=
bench-live: build
	bin/txmsg bench latency --relay-bin bin/txmsg $(BENCH_ARGS)
	bin/txmsg bench drain --relay-bin bin/txmsg --rows 100000,400000,1000000 $(BENCH_ARGS)

## vet: go vet and gofmt
vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt needed"; exit 1; }

## lint: golangci-lint with .golangci.yml (go vet, staticcheck, errcheck, goimports, ...)
lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	GOBIN="$(CURDIR)/bin/.install" $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv bin/.install/golangci-lint $@
	rmdir bin/.install

mariadb:
	./scripts/ensure-mariadb.sh
