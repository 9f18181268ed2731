# Misaki — make help lists the targets.
GO        ?= go
BIN       := bin
LDFLAGS   := -s -w
PKGS      := ./...
export CGO_ENABLED ?= 0

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the binaries into bin/
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

.PHONY: cross
cross: ## Cross-compile stripped misaki-proxy, misaki-gateway, misaki-linkd, misaki-controller, misaki-hub, misaki-agent and the misaki CLI for linux/amd64 and linux/arm64 and print sizes
	@for arch in amd64 arm64; do for cmd in misaki-proxy misaki-gateway misaki-linkd misaki-controller misaki-hub misaki-agent misaki; do \
	  GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/linux-$$arch/$$cmd ./cmd/$$cmd || exit 1; \
	  printf '%-32s %s bytes\n' "$(BIN)/linux-$$arch/$$cmd" "$$(stat -c %s $(BIN)/linux-$$arch/$$cmd)"; \
	done; done

IMAGE_REPO ?= ghcr.io/misaki-io
IMAGE_TAG  ?= 0.1.0
PLATFORMS  ?= linux/amd64,linux/arm64
.PHONY: images
images: cross ## Build the proxy, gateway, link agent, controller, hub and agent images (docker buildx; the charts' defaults are $(IMAGE_REPO)/misaki-*:$(IMAGE_TAG))
	cp /etc/ssl/certs/ca-certificates.crt $(BIN)/ca-certificates.crt
	for t in misaki-proxy misaki-gateway misaki-linkd misaki-controller misaki-hub misaki-agent; do \
	  docker buildx build -f build/Dockerfile --target $$t --platform $(PLATFORMS) -t $(IMAGE_REPO)/$$t:$(IMAGE_TAG) . || exit 1; \
	done

.PHONY: test
test: lint ## Run every test with the race detector (as CI does)
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m $(PKGS)
	@# Race builds read and write sockets through syscall.Read/Write
	@# (internal/sockio); the release build's raw calls are tested here.
	$(GO) test -count=1 ./internal/sockio/ ./internal/proxy/h1/ ./internal/forward/ ./internal/proxy/server/

.PHONY: test-soak
test-soak: ## Long runs: 1,000 SIGKILLs of the edge binary mid-spool, and 5 minutes of each frame log, spool, head, batch and DNS fuzzer
	MISAKI_CRASH_KILLS=1000 $(GO) test -count=1 -timeout 30m -run TestSpoolThroughSIGKILL -v ./test/
	$(GO) test -run '^$$' -fuzz FuzzDecodeRecord -fuzztime 5m ./internal/proxy/spool/
	$(GO) test -run '^$$' -fuzz FuzzScan -fuzztime 5m ./internal/framelog/
	$(GO) test -run '^$$' -fuzz FuzzParseRequest -fuzztime 5m ./internal/httphead/
	$(GO) test -run '^$$' -fuzz FuzzParseResponse -fuzztime 5m ./internal/httphead/
	$(GO) test -run '^$$' -fuzz FuzzRead -fuzztime 5m ./internal/batch/
	$(GO) test -run '^$$' -fuzz FuzzServe -fuzztime 5m ./internal/proxy/localdns/

.PHONY: test-short
test-short: ## Quick tests without the race detector and slow end-to-end runs
	$(GO) test -short -count=1 $(PKGS)

.PHONY: fuzz
fuzz: ## Fuzz every decoder for FUZZTIME each (default 60s)
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-60s} ./internal/proxy/config/
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-60s} ./internal/linkd/config/
	$(GO) test -run '^$$' -fuzz FuzzConnection -fuzztime $${FUZZTIME:-60s} ./internal/proxy/h1/
	$(GO) test -run '^$$' -fuzz FuzzDecodeRecord -fuzztime $${FUZZTIME:-60s} ./internal/proxy/spool/
	$(GO) test -run '^$$' -fuzz FuzzScan -fuzztime $${FUZZTIME:-60s} ./internal/framelog/
	$(GO) test -run '^$$' -fuzz FuzzParseRequest -fuzztime $${FUZZTIME:-60s} ./internal/httphead/
	$(GO) test -run '^$$' -fuzz FuzzParseResponse -fuzztime $${FUZZTIME:-60s} ./internal/httphead/
	$(GO) test -run '^$$' -fuzz FuzzRead -fuzztime $${FUZZTIME:-60s} ./internal/batch/
	$(GO) test -run '^$$' -fuzz FuzzServe -fuzztime $${FUZZTIME:-60s} ./internal/proxy/localdns/
	$(GO) test -run '^$$' -fuzz FuzzScan -fuzztime $${FUZZTIME:-60s} ./internal/h2guard/
	$(GO) test -run '^$$' -fuzz FuzzPutLink -fuzztime $${FUZZTIME:-60s} ./internal/proxy/admin/
	$(GO) test -run '^$$' -fuzz FuzzRequests -fuzztime $${FUZZTIME:-60s} ./internal/proxy/admin/
	$(GO) test -run '^$$' -fuzz FuzzGet -fuzztime $${FUZZTIME:-60s} ./internal/proxy/admin/

.PHONY: generate
generate: ## Regenerate the CRD, deepcopy and RBAC from api/ and the controller's markers, and the proxy's xDS messages
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.16.5 object paths=./api/...
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.16.5 crd paths=./api/... output:crd:artifacts:config=config/crd
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.16.5 rbac:roleName=misaki-controller paths=./internal/controller/... output:rbac:artifacts:config=config/rbac
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	cd internal/proxy/xds/xdspb && PATH="$$(go env GOPATH)/bin:$$PATH" protoc --go_out=. --go_opt=paths=source_relative -I. lite.proto
	@# The chart carries the CRD and the RBAC; config/install is the chart rendered for kubectl users.
	cp config/crd/mesh.misaki.io_routes.yaml charts/misaki/crds/
	cp config/crd/mesh.misaki.io_routes.yaml internal/cli/crds/
	cp config/rbac/role.yaml charts/misaki/files/role.yaml
	mkdir -p config/install
	"$$(bash hack/kube-tools.sh)/helm" template misaki charts/misaki --namespace misaki-system >config/install/misaki.yaml

.PHONY: kube-tools
kube-tools: ## Build (once) and print the etcd + kube-apiserver directory the control-plane tests use
	@bash hack/kube-tools.sh

LINT_BIN ?= $(HOME)/.cache/misaki/bin
.PHONY: lint
lint: ## gofmt, go vet, staticcheck and golangci-lint's checks in .golangci.yml (docs/decisions/0006-lint.md); the linters are built once
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@MISAKI_LINT_BIN="$(LINT_BIN)" bash hack/lint-tools.sh
	@# Both run, so that one pass lists every finding.
	st=0; $(LINT_BIN)/staticcheck $(PKGS) || st=1; $(LINT_BIN)/golangci-lint run $(PKGS) || st=1; exit $$st

.PHONY: demo
demo: build ## The whole system on loopback: hub, cloud + 2 vehicle clusters, agents, gateway, proxies, a rollout story, checks (docs/demo.md)
	@# The clusters' binaries: built once (about 10 minutes), then cached in ~/.cache/misaki.
	assets="$$(KUBE_TOOLS_CLUSTER=1 bash hack/kube-tools.sh)" && $(BIN)/misaki-demo system --bin-dir $(BIN) --assets "$$assets"

.PHONY: demo-mesh
demo-mesh: build ## The data plane alone: upstream, proxy, vehicle app and a link that drops and returns
	$(BIN)/misaki-demo run --proxy-bin $(BIN)/misaki-proxy

.PHONY: bench
bench: ## Side-by-side benchmarks into bench/results/ (installs nginx, wrk, h2load, Caddy, fortio, NATS, dnsperf, unbound, dnsmasq, CoreDNS on first run)
	hack/bench-tools.sh
	REBUILD=1 bench/proxy.sh
	@# The latency runs again with everything on one CPU: no cross-vCPU wake-ups.
	PROXY_CPU=1 LOAD_CPU=1 LOADS=fortio SIZES=0 bench/proxy.sh
	$(GO) test -run '^$$' -bench Hold10k -benchtime 1x -v ./bench/holdbench/ | tee bench/results/hold-$$(date +%Y%m%d-%H%M%S).txt
	@# A link change on a node with 50 pods: misaki-linkd and 50 proxies, beside 50 proxies watching the kernel (root: network namespaces).
	$(GO) test -run '^$$' -bench LinkChange -benchtime 1x -timeout 30m -v ./bench/linkbench/ | tee bench/results/link-$$(date +%Y%m%d-%H%M%S).txt
	@# Durable enqueue through the 202 path beside NATS JetStream and the disk's limits.
	PROXY_CPUS=0,1 bench/spool.sh
	@# A million spooled requests: without a memory limit, then with limits.memory 48MiB.
	$(GO) test -run '^$$' -bench Million -benchtime 1x -v ./bench/spoolbench/ | tee bench/results/spool-$$(date +%Y%m%d-%H%M%S).txt
	SPOOL_MEMORY=48MiB $(GO) test -run '^$$' -bench Million -benchtime 1x -v ./bench/spoolbench/ | tee bench/results/spool-48MiB-$$(date +%Y%m%d-%H%M%S).txt
	@# The replay drain: straight to a local service, through the gateway (mTLS, idempotency store), and with batch delivery.
	$(GO) test -run '^$$' -bench Drain -benchtime 1x -v ./bench/spoolbench/ | tee bench/results/drain-$$(date +%Y%m%d-%H%M%S).txt
	@# The DNS server's cached answers beside unbound, dnsmasq and CoreDNS; memory with 100,000 names; the cache file's load.
	bench/dns.sh
	$(GO) test -run '^$$' -bench 'CacheMemory|Load' -benchtime 5x ./internal/proxy/localdns/ | tee bench/results/dns-cache-$$(date +%Y%m%d-%H%M%S).txt
	$(GO) test -run '^$$' -bench . -benchmem ./internal/proxy/... ./internal/gateway/...
	@# The control plane against a real kube-apiserver: 1,000 simulated proxies x 100 routes, then 100 of the proxy's own xDS clients.
	bash hack/kube-tools.sh >/dev/null
	$(GO) test -run '^$$' -bench ControlPlane -benchtime 1x -timeout 30m -v ./bench/xdsbench/ 2>&1 | grep -v reflector | tee bench/results/xds-$$(date +%Y%m%d-%H%M%S).txt
	CLIENT=real PROXIES=100 CHANGES=5 $(GO) test -run '^$$' -bench ControlPlane -benchtime 1x -timeout 30m -v ./bench/xdsbench/ 2>&1 | grep -v reflector | tee bench/results/xds-real100-$$(date +%Y%m%d-%H%M%S).txt
	@# The hub: 10,000 simulated vehicles (mTLS long-polls, verify, report) and one deployment change, on SQLite, PostgreSQL and two replicas; then signing's cost.
	$(GO) run ./bench/hubbench | tee bench/results/hub-$$(date +%Y%m%d-%H%M%S).md
	@# The gateway's de-duplication: three replicas on PostgreSQL beside one on the local store (and one on PostgreSQL).
	$(GO) run ./bench/gatewaybench | tee bench/results/gateway-$$(date +%Y%m%d-%H%M%S).md
	KUBE_TOOLS_CLUSTER=1 bash hack/kube-tools.sh >/dev/null && $(GO) test -run '^$$' -bench Footprint -benchtime 1x -timeout 30m -v ./bench/agentbench/

.PHONY: clean
clean: ## Remove build output
	rm -rf $(BIN)
