# recalc: `make` (or `make help`) lists the targets.
# The database comes from DATABASE_URL when set; otherwise scripts/db.sh starts a throwaway
# PostgreSQL cluster in .pg/ (port 54329) that `make db-stop` stops.

SHELL := /bin/bash
.DEFAULT_GOAL := help
# Go may not be on PATH (CI, fresh shells); its usual home comes last so any other go wins.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go

.PHONY: help build test demo db-stop bench bench-go lint clean

help: ## list the targets
	@echo "usage: make TARGET"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/recalc
	$(GO) build -o bin/recalc ./cmd/recalc

test: build ## go vet, go test -race, the conformance cases, a 2,000-record benchmark smoke run and 20 s of fuzzing, against DATABASE_URL (or a throwaway cluster)
	@bash scripts/test.sh

demo: build ## load a generated 50k-record org into database recalc_demo (DEMO_DB names another), recalculate, show stats and one access query
	@bash scripts/demo.sh

db-stop: ## stop the throwaway PostgreSQL cluster in .pg/
	@bash scripts/db.sh stop

bench: build ## measure full and incremental runs against raw COPY and a pure-SQL peer at BENCH_SIZE records (default 1000000; a comma list for several); writes bench/results.json
	@url=$$(bash scripts/db.sh url) && \
	  DATABASE_URL="$$url" $(GO) run ./bench/cmd/bench -sizes "$(or $(BENCH_SIZE),1000000)" -recalc bin/recalc -out bench/results.json

bench-go: ## the Go benchmarks of the hot paths, once each (BENCH_SIZE sets the org size)
	@url=$$(bash scripts/db.sh url) && \
	  DATABASE_URL="$$url" $(if $(BENCH_SIZE),BENCH_SIZE="$(BENCH_SIZE)") \
	  $(GO) test -run='^$$' -bench=. -benchtime=1x ./bench/...

lint: ## go vet, staticcheck (fetched by go run, pinned), and fail when gofmt would change a file
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	@files=$$(find . -type d \( -name .git -o -name .pg -o -name .demo -o -name bin -o -name testdata \) -prune \
	  -o -type f -name '*.go' -print | xargs -r gofmt -l); \
	if [ -n "$$files" ]; then echo "gofmt -l lists files that need formatting:"; echo "$$files"; exit 1; fi

clean: ## remove bin/ and .demo/
	rm -rf bin .demo
