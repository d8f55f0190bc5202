# The test command CI runs (.ci/run) and the README names.
.PHONY: test build fmt-check vet

GO ?= go

test: fmt-check vet
	@if command -v gcc >/dev/null 2>&1 || command -v cc >/dev/null 2>&1; then \
		echo "allocation counts, without -race (it makes sync.Pool drop items at random):" && \
		$(GO) test -count=1 -run 'Allocations' ./internal/relay ./internal/wsconn ./internal/cluster ./internal/bench && \
		$(GO) test -race -count=1 -timeout 15m ./... ; \
	elif [ "$$SWITCHBOARD_TEST_STRICT" = 1 ]; then \
		echo "make test: no C compiler; the race detector needs one (apt-get install gcc)" >&2; exit 1; \
	else \
		echo "make test: no C compiler, running without -race (install gcc for the race detector)" >&2; \
		$(GO) test -count=1 -timeout 15m ./... ; \
	fi

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out" >&2; exit 1; fi

vet:
	$(GO) vet ./...

build:
	$(GO) build -o switchboard ./cmd/switchboard
