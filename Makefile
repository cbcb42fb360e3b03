# ExeClaw. `make test` is the whole suite, exactly what CI runs.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/execlaw/execlaw/internal/version.Version=$(VERSION)

.PHONY: build test vet fmt-check bench fuzz run clean screenshots vendor-web install server-image

# Both static (CGO_ENABLED=0): nothing needs cgo, and execlaw then runs in
# the server image, which has no libc.
build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/execlaw ./cmd/execlaw
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/execlaw-guest ./cmd/execlaw-guest

# The server's own image for deploy/kubernetes, as an OCI image archive:
# bin/execlaw, CA certificates and a user, nothing else. Load it on the
# nodes (ctr -n k8s.io images import, podman load, docker load) or push
# it, and name it in deploy/kubernetes/deployment.yaml.
SERVER_IMAGE ?= execlaw:$(VERSION)
server-image: build
	bin/execlaw image server --oci bin/execlaw-server.oci.tar --oci-tag $(SERVER_IMAGE)

# The Kubernetes test cluster's binaries are compiled first (once: about 13
# minutes on two cores, then cached in /var/tmp/execlaw-k8s) so that no test
# waits for them; the tests start the cluster, and it is stopped after them
# however they end. The guest kernel is compiled by the first test that boots
# a VM (once, cached in /var/tmp/execlaw-test-images), while the tests that
# need none run beside it: hence the long timeout.
test: fmt-check vet
	scripts/k8s-testbed.sh build kube
	$(GO) test -race -count=1 -timeout 45m ./...; rc=$$?; scripts/k8s-testbed.sh down; exit $$rc
	$(MAKE) fuzz FUZZTIME=60s

# Hostile requests to every route (Go's native fuzzing), for FUZZTIME; the
# seeds also run in the plain test run.
FUZZTIME ?= 5m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzAPI$$' -fuzztime $(FUZZTIME) ./internal/api/

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Figures, not pass/fail: event fan-out throughput and delay; sandbox
# create-to-ready by part; pause, resume (snapshot and cold) and snapshot
# size beside a cold boot; the warm pool beside cold boots; the built guest
# kernel beside Debian's; a session pod's start on the test cluster.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./internal/api/
	$(GO) test -run '^$$' -bench 'CreateToReady|PauseResume|WarmPool|Kernels' -benchtime 5x -timeout 30m ./internal/vmtest/
	$(GO) test -run '^$$' -bench 'PodStart|PodClaim|KwokScale' -benchtime 5x -timeout 30m ./internal/sandbox/kubernetes/; rc=$$?; scripts/k8s-testbed.sh down; exit $$rc

# Pictures of the web UI's main views for the README (headless Chromium, the
# fake LLM), written to docs/screenshots/.
screenshots:
	EXECLAW_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run '^TestScreenshots$$' ./internal/webtest/

# Fetch the vendored browser libraries again from npm (pinned versions).
vendor-web:
	scripts/vendor-web.sh

run: build
	bin/execlaw serve

# Install as a system service (user execlaw, /var/lib/execlaw, systemd unit);
# needs root. install.sh --enable also starts it.
install:
	./install.sh

clean:
	rm -rf bin
