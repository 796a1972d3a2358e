# topcdn: make demo (run a local network), make test (all tests).
GO ?= go
BIN := bin/topcdn
# PEBBLE is Let's Encrypt's test ACME CA, which the devnet runs as its CA;
# go.mod pins it (a tool line).
PEBBLE := bin/pebble

.PHONY: all build demo test test-short fuzz bench conformance vet clean

all: build

build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/topcdn
	$(GO) build -o $(PEBBLE) github.com/letsencrypt/pebble/v2/cmd/pebble

## demo: build topcdn (Caddy edge included) and pebble, run the devnet in ./demo: origin, 14 storage
## peers, billing, the DNS router, an ACME CA (pebble) and 3 edges on loopback serving HTTP and HTTPS,
## examples/site published as blog; print what to open and how to trust the CA.
DEMO_DIR ?= demo
demo: build
	$(BIN) devnet --dir $(DEMO_DIR)

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
	$(GO) test -run '^$$' -fuzz=FuzzUploadAuth -fuzztime=$(FUZZTIME) ./origin
	$(GO) test -run '^$$' -fuzz=FuzzReadOrder -fuzztime=$(FUZZTIME) ./storage
	$(GO) test -run '^$$' -fuzz=FuzzManifest -fuzztime=$(FUZZTIME) ./erasure
	$(GO) test -run '^$$' -fuzz=FuzzDecodeBatch -fuzztime=$(FUZZTIME) ./billing
	$(GO) test -run '^$$' -fuzz=FuzzAnswer -fuzztime=$(FUZZTIME) ./dnsroute
	$(GO) test -run '^$$' -fuzz=FuzzHeartbeat -fuzztime=$(FUZZTIME) ./dnsrouteapi
	$(GO) test -run '^$$' -fuzz=FuzzChallenge -fuzztime=$(FUZZTIME) ./dnsrouteapi
	$(GO) test -run '^$$' -fuzz=FuzzUnmarshalCaddyfile -fuzztime=$(FUZZTIME) ./caddymodule
	$(GO) test -run '^$$' -fuzz=FuzzDNSProviderCaddyfile -fuzztime=$(FUZZTIME) ./caddymodule

## bench: publish vs kubo (builds kubo once, cached); erasure striping vs raw coding and fsync; edge vs Caddy and nginx (needs wrk, nginx); edge memory; dns vs CoreDNS (needs dnsperf; builds CoreDNS once, cached); billing batch vs per-record signatures.
bench:
	$(GO) run ./bench publish
	$(GO) run ./bench erasure
	$(GO) run ./bench edge
	$(GO) run ./bench edge-memory
	$(GO) run ./bench dns
	$(GO) run ./bench billing

## conformance: ipfs/gateway-conformance v0.13.2 against a real origin and edge on loopback; pass/fail per
## spec group (suite fetched and built once into ~/.cache/topcdn; then offline, seconds). Not part of test.
conformance:
	./scripts/conformance.sh

clean:
	rm -rf bin demo
