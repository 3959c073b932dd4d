# quickpay — two commands do all set-up on a fresh Debian machine (as root):
#   make run    the whole local stack and a demo merchant
#   make test   every test against real Postgres, SoftHSM2 and Vault
SHELL   := /bin/bash
GO      ?= go
BIN     := $(CURDIR)/.quickpay/bin
DEVVAULT := $(BIN)/devvault

.PHONY: run test deps build devvault vet bench fuzz soak clean

run: deps build devvault
	@$(BIN)/quickpay dev

test: deps devvault vet
	QUICKPAY_DEVVAULT=$(DEVVAULT) $(GO) test -race -count=1 -timeout 30m ./...
	QUICKPAY_DEVVAULT=$(DEVVAULT) $(GO) test -race -count=1 -tags devfaults -run '^TestPoolRecoversFromDevFaults$$' ./vaultkeys/

# The soak (docs/soak.md): a private stack with two serve instances, crashes,
# a Postgres restart and HSM faults, judged against banksim's ledger; under
# 15 minutes by default; evidence in .quickpay/soak/<timestamp>.
# E.g. make soak SOAKFLAGS="-seed 7 -rounds 2"
SOAKFLAGS ?=
soak: deps devvault
	QUICKPAY_DEVVAULT=$(DEVVAULT) $(GO) run ./cmd/qpsoak $(SOAKFLAGS)

vet:
	$(GO) vet ./...

# Fuzz targets (docs/decisions.md "Fuzzing"), each for FUZZTIME; go test
# fuzzes one target per run. `make test` replays their seed corpora
# (testdata/fuzz). E.g. make fuzz FUZZTIME=60s FUZZPARALLEL=1
FUZZTIME ?= 30s
FUZZPARALLEL ?=
FUZZ_TARGETS := api:FuzzBind \
	bankadapters/jsonhmac:FuzzJSONHMACDecode bankadapters/jsonhmac:FuzzJSONHMACCallback \
	bankadapters/jsonhmac:FuzzJSONHMACEntries \
	bankadapters/formrsa:FuzzFormRSADecode bankadapters/formrsa:FuzzCanonical \
	bankadapters/formrsa:FuzzFormRSAEntries \
	mandate:FuzzParseDate mandate:FuzzSchedule
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; name=$${t##*:}; echo "== $$name (./$$pkg, $(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $(if $(FUZZPARALLEL),-parallel $(FUZZPARALLEL)) ./$$pkg; \
	done

# Benchmarks behind docs/benchmarks.md.
bench: deps devvault
	QUICKPAY_DEVVAULT=$(DEVVAULT) $(GO) test -run '^$$' -bench . -benchtime 2s -count 6 ./vaultkeys/

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/quickpay ./cmd/quickpay
	$(GO) build -o $(BIN)/banksim ./cmd/banksim

# A real Vault 1.21 core in its own module (see internal/dev/devvault/main.go).
# The first build downloads and compiles Vault: minutes; later ones are cached.
devvault: $(DEVVAULT)
$(DEVVAULT): internal/dev/devvault/main.go internal/dev/devvault/go.mod internal/dev/devvault/go.sum
	@mkdir -p $(BIN)
	@echo "building devvault (a real Vault server core; the first build takes a few minutes)"
	cd internal/dev/devvault && $(GO) build -o $(DEVVAULT) .

# Installs what is missing: SoftHSM2, Chromium and a Chinese font always (the
# hosted page's browser tests drive /usr/bin/chromium headless, see
# internal/dev/browser; without a CJK font its screenshots show boxes);
# PostgreSQL only when no server answers on 127.0.0.1:5432 and no initdb is
# installed (the stack and the tests then run a private cluster with it).
deps:
	@need=""; \
	command -v softhsm2-util >/dev/null 2>&1 || need="$$need softhsm2"; \
	[ -x /usr/bin/chromium ] || need="$$need chromium"; \
	fc-list :lang=zh 2>/dev/null | grep -q . || need="$$need fonts-wqy-microhei"; \
	if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && [ -z "$$QUICKPAY_DATABASE_URL" ] \
	   && ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  need="$$need postgresql"; \
	fi; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "missing:$$need — install them (Debian: apt-get install$$need) and run again" >&2; exit 1; \
	  fi; \
	  echo "installing:$$need"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q $$need >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q $$need >/dev/null; }; \
	fi

clean:
	rm -rf .quickpay/bin
