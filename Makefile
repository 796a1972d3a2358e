# topcdn: make demo (run a local network), make test (all tests).
GO ?= go
BIN := bin/topcdn

.PHONY: all build demo test test-short fuzz bench vet clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/topcdn

## demo: build, start an origin on 127.0.0.1:8081, publish examples/site, print what to open.
demo:
	./scripts/demo.sh

## test: vet, then every test (unit, end-to-end with real processes, fuzz seed corpora) with the race detector.
test: vet
	$(GO) test -race -count=1 -timeout 20m ./...

## test-short: the fast unit tests only.
test-short:
	$(GO) test -short -count=1 ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

## fuzz: run each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz=FuzzIngest -fuzztime=$(FUZZTIME) ./origin
	$(GO) test -run '^$$' -fuzz=FuzzPutRecord -fuzztime=$(FUZZTIME) ./origin
	$(GO) test -run '^$$' -fuzz=FuzzReadOrder -fuzztime=$(FUZZTIME) ./storage
	$(GO) test -run '^$$' -fuzz=FuzzManifest -fuzztime=$(FUZZTIME) ./erasure
	$(GO) test -run '^$$' -fuzz=FuzzAnswer -fuzztime=$(FUZZTIME) ./dnsroute
	$(GO) test -run '^$$' -fuzz=FuzzHeartbeat -fuzztime=$(FUZZTIME) ./dnsroute

## bench: publish vs kubo (builds kubo once, cached); erasure striping vs raw coding and fsync; edge vs Caddy and nginx (needs wrk, nginx); dns vs CoreDNS (needs dnsperf; builds CoreDNS once, cached).
bench:
	$(GO) run ./bench publish
	$(GO) run ./bench erasure
	$(GO) run ./bench edge
	$(GO) run ./bench dns

clean:
	rm -rf bin demo
