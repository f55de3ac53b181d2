# rehome — make run (local cluster), make test (everything).
GO      ?= go
BIN     := $(CURDIR)/bin
MODULES := shared shared/clustertest services/storage services/detector services/planner services/mover services/s3 services/console cmd/rehome
PKGS    := $(addsuffix /...,$(addprefix ./,$(MODULES)))
ARGS    ?=

SHELL   := bash
export CGO_ENABLED = 0

.PHONY: build run test lint bench fuzz tidy clean sim soak

## build: static binaries in bin/ (bin/rehome)
build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/rehome ./cmd/rehome

## run: the local cluster in the foreground (Ctrl-C stops it); ARGS="--nodes 8" to change it
run: build
	$(BIN)/rehome dev $(ARGS)

## test: the whole suite, unit to end-to-end through bin/rehome
test: build lint
	@mkdir -p $(BIN)/artifacts
	REHOME_BIN=$(BIN)/rehome REHOME_ARTIFACTS=$(BIN)/artifacts $(GO) test -count=1 -timeout 20m $(PKGS)

## soak: random kills, pauses and full disks against rehome dev for SOAK_FOR while a client writes and verifies (docs/development.md#soak)
# make soak SOAK_FOR=30m SEED=1234 repeats a run's faults; SOAK_HEAL bounds the heal after them;
# SOAK_TIMEOUT is go test's -timeout (raise it past SOAK_FOR + SOAK_HEAL + 5m).
SOAK_FOR     ?= 5m
SOAK_HEAL    ?= 3m
SOAK_TIMEOUT ?= 2h
# SEED only when given (make sim's default of 1 is not the soak's: unset, it draws one)
SOAK_SEED     = $(if $(filter command line environment,$(origin SEED)),SEED=$(SEED))
soak: build
	@mkdir -p $(BIN)/artifacts
	REHOME_BIN=$(BIN)/rehome REHOME_ARTIFACTS=$(BIN)/artifacts SOAK_FOR=$(SOAK_FOR) SOAK_HEAL=$(SOAK_HEAL) $(SOAK_SEED) \
	  $(GO) test -count=1 -v -run '^TestSoak$$' -timeout $(SOAK_TIMEOUT) ./cmd/rehome/e2e/

## sim: SEEDS seeded fault schedules (default 1000) on NODES nodes (30) against the real detector and planner cores (SPEC §10)
SEEDS ?= 1000
NODES ?= 30
SEED  ?= 1
sim: build
	$(BIN)/rehome sim --nodes $(NODES) --schedules $(SEEDS) --seed $(SEED) $(ARGS)

## lint: gofmt and go vet over every module
lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## bench: every benchmark, then the SPEC §6 table (bench/results.json); QUICK=1 for a smaller run;
## a part: make bench BENCH='DrainVsRepair|RebalanceAfter' OUT=membership (bench/membership-*.*, its rows only)
# Micro-benchmarks (packages) run BENCHCOUNT times and the report takes medians;
# experiments (detector timing, everything through `rehome dev`) run EXPCOUNT times
# (default 1; the README's figures: EXPCOUNT=3, the median run of each row).
BENCH      ?= .
OUT_TXT     = $(if $(OUT),$(OUT)-out.txt,out.txt)
OUT_JSON    = $(if $(OUT),$(OUT)-results.json,results.json)
BENCHCOUNT ?= $(if $(QUICK),1,5)
BENCHTIME  ?= $(if $(QUICK),200ms,1s)
EXPCOUNT   ?= 1
MICRO_PKGS := ./shared/... ./services/storage/... ./services/planner/... ./services/mover/...
EXP_PKGS   := ./services/detector/... ./cmd/rehome/...
bench: build
	@mkdir -p bench
	set -o pipefail; { \
	  REHOME_BENCH_QUICK=$(QUICK) $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(BENCHCOUNT) -benchtime $(BENCHTIME) -timeout 60m $(MICRO_PKGS) && \
	  REHOME_BIN=$(BIN)/rehome REHOME_BENCH_QUICK=$(QUICK) $(GO) test -run '^$$' -bench '$(BENCH)' -benchmem -count $(EXPCOUNT) -timeout 120m $(EXP_PKGS); \
	} | tee bench/$(OUT_TXT)
	$(GO) run ./cmd/rehome/benchreport -in bench/$(OUT_TXT) -json bench/$(OUT_JSON) $(if $(OUT),-ran)

## fuzz: run every fuzz target for FUZZTIME each (make test runs their seed corpora)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' $(MODULES) | xargs -n1 dirname | sort -u); do \
		for fn in $$(grep -h '^func Fuzz' $$pkg/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "== $$pkg $$fn"; $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
		done; \
	done

## tidy: go mod tidy in every module
tidy:
	@for m in $(MODULES); do (cd $$m && $(GO) mod tidy) || exit 1; done

clean:
	rm -rf $(BIN)

# ---- the docker compose stack (deploy/) -----------------------------------------
# Images are built here FROM scratch from static binaries, with the classic builder
# (DOCKER_BUILDKIT=0: a docker client >= 23 without buildx refuses BuildKit), and
# compose never pulls. DOCKER is the first docker client on PATH that builds with
# its defaults (deploy/scripts/pick-docker.sh); override with `make DOCKER=...`.
ifeq ($(origin DOCKER),undefined)
DOCKER := $(shell deploy/scripts/pick-docker.sh)
endif
ifeq ($(origin COMPOSE),undefined)
COMPOSE := $(shell if command -v docker-compose >/dev/null 2>&1; then echo docker-compose; \
	elif [ -n "$(DOCKER)" ] && $(DOCKER) compose version >/dev/null 2>&1; then echo "$(DOCKER) compose"; fi)
endif
STACK_DIR   := $(CURDIR)/deploy
STACK_BUILD := $(STACK_DIR)/.build
STACK       := $(COMPOSE) -p rehome -f $(STACK_DIR)/compose.yaml
JAEGER_BIN  := $(STACK_BUILD)/jaeger
PROM_BIN    := $(STACK_BUILD)/prometheus

.PHONY: stack-check stack-auth stack-images stack-up stack-down stack-test stack-ps stack-logs

stack-check:
	@[ -n "$(DOCKER)" ] || { echo "no docker client found (set DOCKER=...)"; exit 1; }
	@[ -n "$(COMPOSE)" ] || { echo "no docker-compose nor '$(DOCKER) compose' found (set COMPOSE=...)"; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "the Docker engine does not answer ($(DOCKER) info)"; exit 1; }

$(JAEGER_BIN):
	GO=$(GO) deploy/scripts/build-jaeger.sh $@

$(PROM_BIN):
	GO=$(GO) deploy/scripts/build-prometheus.sh $@

## stack-images: rehome:local, rehome-nats:local, rehome-jaeger:local, rehome-prometheus:local (Jaeger's and Prometheus's binaries are cached in deploy/.build)
stack-images: stack-check build $(JAEGER_BIN) $(PROM_BIN)
	@mkdir -p $(STACK_BUILD)/img/rehome $(STACK_BUILD)/img/nats $(STACK_BUILD)/img/jaeger $(STACK_BUILD)/img/prometheus
	$(GO) build -trimpath -ldflags='-s -w' -o $(STACK_BUILD)/nats-server github.com/nats-io/nats-server/v2
	cp $(BIN)/rehome $(STACK_DIR)/images/rehome/Dockerfile $(STACK_BUILD)/img/rehome/
	cp $(BIN)/rehome $(STACK_BUILD)/nats-server $(STACK_DIR)/images/nats/Dockerfile $(STACK_DIR)/images/nats/nats.conf $(STACK_BUILD)/img/nats/
	cp $(BIN)/rehome $(JAEGER_BIN) $(STACK_DIR)/images/jaeger/Dockerfile $(STACK_DIR)/images/jaeger/jaeger.yaml $(STACK_BUILD)/img/jaeger/
	DOCKER_BUILDKIT=0 $(DOCKER) build -q -t rehome:local $(STACK_BUILD)/img/rehome
	DOCKER_BUILDKIT=0 $(DOCKER) build -q -t rehome-nats:local $(STACK_BUILD)/img/nats
	cp $(BIN)/rehome $(PROM_BIN) $(STACK_DIR)/images/prometheus/Dockerfile $(STACK_DIR)/prometheus/prometheus.yml $(STACK_DIR)/prometheus/rules.yml $(STACK_BUILD)/img/prometheus/
	DOCKER_BUILDKIT=0 $(DOCKER) build -q -t rehome-jaeger:local $(STACK_BUILD)/img/jaeger
	DOCKER_BUILDKIT=0 $(DOCKER) build -q -t rehome-prometheus:local $(STACK_BUILD)/img/prometheus

# deploy/.build/auth: the stack's NATS users and permissions (auth.conf, mounted
# into each NATS server) and one env file per service; deploy/.build/secrets.env:
# the operator's bus URL (the stack's published ports) and the storage token, for
# a CLI on the host. Passwords and the token are kept across runs.
STACK_NATS      := nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222
STACK_HOST_NATS  = nats://127.0.0.1:$${REHOME_STACK_NATS_PORT_1:-14222},nats://127.0.0.1:$${REHOME_STACK_NATS_PORT_2:-14223},nats://127.0.0.1:$${REHOME_STACK_NATS_PORT_3:-14224}
stack-auth: build
	@$(BIN)/rehome auth init --dir $(STACK_BUILD)/auth --secrets $(STACK_BUILD)/secrets.env \
	  --nats $(STACK_NATS) --host-nats "$(STACK_HOST_NATS)" \
	  --storage storage-1,storage-2,storage-3,storage-4,storage-5,storage-6 \
	  --detectors detector-1,detector-2 --planners planner-1,planner-2 --movers mover-1,mover-2,mover-3 \
	  --s3 s3-1,s3-2 --s3-endpoint "http://127.0.0.1:$${REHOME_STACK_S3_PORT_1:-19000}"

## stack-up: build the images and start the stack (6 storage, 3 NATS, 2 detectors, 2 planners, 3 movers, 2 S3 gateways, a console, Jaeger, Prometheus)
stack-up: stack-images stack-auth
	$(STACK) up -d --no-build
	deploy/scripts/wait-healthy.sh $(DOCKER) rehome 240

## stack-down: stop the stack and remove its containers, network and volumes
stack-down: stack-check stack-auth
	$(STACK) down -v --remove-orphans --timeout 5

stack-ps: stack-check
	$(STACK) ps

stack-logs: stack-check
	$(STACK) logs --tail 50 $(ARGS)

## stack-test: a fresh stack, the end-to-end drills against it (deploy/stacktest), then down (STACK_KEEP=1 keeps it)
stack-test: stack-check
	$(MAKE) --no-print-directory stack-down
	$(MAKE) --no-print-directory stack-up
	@out=$$(gofmt -l deploy/stacktest); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	cd deploy/stacktest && GOWORK=off $(GO) vet -tags stack ./...
	@rc=0; cd deploy/stacktest && GOWORK=off REHOME_BIN=$(BIN)/rehome DOCKER=$(DOCKER) REHOME_STACK_ENV=$(STACK_BUILD)/secrets.env \
	  REHOME_STACK_WORKDIR=$(STACK_BUILD)/stacktest REHOME_STACK_CLI_ROOT=$(CURDIR) \
	  $(GO) test -tags stack -count=1 -timeout 25m -v . || rc=$$?; \
	  if [ "$$rc" != 0 ]; then $(DOCKER) ps -a --filter label=com.docker.compose.project=rehome --format '{{.Names}}\t{{.Status}}'; fi; \
	  cd $(CURDIR); if [ -z "$(STACK_KEEP)" ]; then $(MAKE) --no-print-directory stack-down; fi; exit $$rc
