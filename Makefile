# rehome — make run (local cluster), make test (everything).
GO      ?= go
BIN     := $(CURDIR)/bin
MODULES := shared services/storage services/detector services/planner services/mover cmd/rehome
PKGS    := $(addsuffix /...,$(addprefix ./,$(MODULES)))
ARGS    ?=

SHELL   := bash
export CGO_ENABLED = 0

.PHONY: build run test lint bench tidy clean

## build: static binaries in bin/ (bin/rehome)
build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/rehome ./cmd/rehome

## run: the local cluster in the foreground (Ctrl-C stops it); ARGS="--nodes 8" to change it
run: build
	$(BIN)/rehome dev $(ARGS)

## test: the whole suite, unit to end-to-end through bin/rehome
test: build lint
	REHOME_BIN=$(BIN)/rehome $(GO) test -count=1 -timeout 15m $(PKGS)

## lint: gofmt and go vet over every module
lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## bench: every benchmark, then the SPEC §6 table (bench/results.json); QUICK=1 for a smaller run
BENCH ?= .
bench: build
	@mkdir -p bench
	set -o pipefail; REHOME_BIN=$(BIN)/rehome REHOME_BENCH_QUICK=$(QUICK) \
		$(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -timeout 60m $(PKGS) | tee bench/out.txt
	$(GO) run ./cmd/rehome/benchreport -in bench/out.txt -json bench/results.json

## tidy: go mod tidy in every module
tidy:
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy) || exit 1; done

clean:
	rm -rf $(BIN)
