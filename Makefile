# specloop: `make demo` and `make test` set up what they need (as root on
# Debian 12: apt packages, .venv, the project) and are safe to run again.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.specloop-installed

# build: clang + libxdp/libbpf; lab: iproute2, ethtool, nftables;
# tests and benchmarks: curl, wrk, nginx, ping, tcpdump, a headless browser;
# the loss matrix's delay: iptables (NFQUEUE; nft's queue is not built into
# this kernel); the WebSocket load generator's SHA-1 and base64: libssl-dev
APT_PACKAGES := clang llvm libxdp-dev libbpf-dev libelf-dev zlib1g-dev \
	pkg-config gcc make iproute2 ethtool nftables curl wrk nginx \
	iputils-ping tcpdump xdp-tools bpftool util-linux libcap2-bin iptables \
	chromium-headless-shell libssl-dev

NATIVE := $(wildcard native/*.c native/*.h native/py/*.c native/py/*.h native/bpf/*.c native/build.py)

.PHONY: all demo test test-fast test-versions system setup tools asan fuzz fuzz-system fuzz-build bench soak lab-down clean

all: setup

system:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "apt-get install:" $$missing; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): $(VENV)/bin/python pyproject.toml setup.py $(NATIVE)
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

setup: system $(STAMP) tools

# test-owned helpers in C: the loss matrix's delay (benchmarks/impair.py),
# the ws-echo workload's client (benchmarks/suite.py; wrk speaks no WebSocket)
TOOLS := build/tools/nfq_delay build/tools/ws_load

tools: $(TOOLS)

build/tools/nfq_delay: benchmarks/nfq_delay.c
	mkdir -p build/tools
	$(CC) -std=gnu11 -O2 -Wall -Wextra -o $@ $<

build/tools/ws_load: benchmarks/ws_load.c
	mkdir -p build/tools
	$(CC) -std=gnu11 -O2 -Wall -Wextra -o $@ $< -lcrypto

demo: setup
	$(VENV)/bin/specloop demo

test: setup
	$(PY) -m pytest -q --require-lab -p no:cacheprovider
	$(MAKE) test-versions

# The other supported Pythons (3.12, 3.13; the machine image has them under
# pyenv): each gets a venv with the project built for it, and runs the
# subset that covers what differs between Python versions (the C loop core,
# asyncio's own tests, transports, servers, the TCP and the fast path).
OTHER_PYTHONS ?= 3.12 3.13
VERSION_TESTS ?= tests/test_loopcore.py tests/test_asyncio_suite.py tests/test_transport.py \
	tests/test_tcp_unit.py tests/test_config.py tests/test_kernel_path.py \
	tests/test_static_fast.py tests/test_servers.py tests/test_tx_gso.py

test-versions: system
	@for v in $(OTHER_PYTHONS); do \
		py=$$(ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/$$v.*/bin/python$$v 2>/dev/null | tail -1); \
		[ -n "$$py" ] || py=$$(command -v python$$v); \
		if [ -z "$$py" ]; then echo "Python $$v not found (pyenv or PATH): install it"; exit 1; fi; \
		echo "== Python $$v ($$py)"; \
		[ -x .venv-$$v/bin/python ] || $$py -m venv .venv-$$v || exit 1; \
		.venv-$$v/bin/pip install -q --upgrade pip && \
		.venv-$$v/bin/pip install -q -e '.[dev]' && \
		.venv-$$v/bin/python -m pytest -q --require-lab -p no:cacheprovider $(VERSION_TESTS) || exit 1; \
	done

test-fast: setup
	$(PY) -m pytest -q -x --require-lab -p no:cacheprovider -m "not slow"

# The native engine with AddressSanitizer + UBSan, built into build/asan/
# (the package's .py files beside the sanitized _native, so PYTHONPATH picks
# it; specloop/_native*.so is not touched), then tests under it.  Python
# leaks by design, so LeakSanitizer is off here (make fuzz has it on).
ASAN_DIR := build/asan
ASAN_TESTS ?= tests/test_fuzz.py tests/test_tcp_unit.py tests/test_config.py tests/test_kernel_path.py
ASAN_ENV = PYTHONPATH=$(ASAN_DIR) \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)"

asan: system $(VENV)/bin/python
	# setup.py below builds with the venv's own setuptools (pip's build is isolated)
	$(PIP) install -q 'setuptools>=77' wheel 'cffi>=1.16'
	rm -rf $(ASAN_DIR)/specloop
	SPECLOOP_SANITIZE=1 $(PY) setup.py -q build_ext --force -b $(ASAN_DIR) -t $(ASAN_DIR)/tmp
	cp specloop/*.py $(ASAN_DIR)/specloop/
	printf '%s\n' '"""Loaded first by Python under make asan: child processes (curl, nginx,' \
		'other Pythons) must not inherit the sanitizer runtime or this build."""' \
		'import os' 'for _k in ("LD_PRELOAD", "PYTHONPATH"):' '    os.environ.pop(_k, None)' \
		> $(ASAN_DIR)/sitecustomize.py
	$(ASAN_ENV) $(PY) -P -c 'import specloop._native as n; \
		assert n.__file__.startswith("$(CURDIR)/$(ASAN_DIR)/"), n.__file__'
	$(ASAN_ENV) $(PY) -P -m pytest -q --capture=sys -p no:cacheprovider $(ASAN_TESTS)

# libFuzzer on the input path (native/fuzz/): the engine's C with ASan +
# UBSan + coverage, a generated seed corpus, FUZZ_SECONDS of fuzzing.
# Crashes are written to build/fuzz/ (crash-*, leak-*); rerun one with
# build/fuzz/fuzz_input build/fuzz/crash-...
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
FUZZ_FLAGS ?=
FUZZ_DIR := build/fuzz
FUZZ_CFLAGS := -std=gnu11 -g -O1 -fno-strict-aliasing -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SOURCES = $(shell $(PY) -c 'import ast, re; \
	src = open("native/build.py").read(); \
	m = re.search(r"^SOURCES = (\[.*?\])", src, re.S | re.M); \
	print(" ".join("native/" + s for s in ast.literal_eval(m.group(1))))')

native/_gen/steer_bpf_obj.h: native/bpf/steer.bpf.c native/build.py
	cd native && ../$(PY) -c 'import build'

$(FUZZ_DIR)/fuzz_input: native/fuzz/fuzz_input.c native/_gen/steer_bpf_obj.h $(NATIVE)
	mkdir -p $(FUZZ_DIR)
	clang $(FUZZ_CFLAGS) -Inative -Inative/_gen -o $@ native/fuzz/fuzz_input.c \
		$(FUZZ_SOURCES) -lxdp -lbpf

# clang's libFuzzer and sanitizer runtime: Debian packs them apart
# (libclang-rt-N-dev, N = clang's major version)
fuzz-system: system
	@p=libclang-rt-$$(clang -dumpversion | cut -d. -f1)-dev; \
	dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || { \
		echo "apt-get install: $$p"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$p; }

fuzz-build: fuzz-system $(VENV)/bin/python $(FUZZ_DIR)/fuzz_input

fuzz: fuzz-build
	rm -rf $(FUZZ_DIR)/seeds && $(PY) native/fuzz/make_corpus.py $(FUZZ_DIR)/seeds
	mkdir -p $(FUZZ_DIR)/corpus
	cd $(FUZZ_DIR) && UBSAN_OPTIONS=print_stacktrace=1 \
		ASAN_OPTIONS=abort_on_error=1$(if $(findstring -detect_leaks=0,$(FUZZ_FLAGS)),:detect_leaks=0) \
		./fuzz_input -max_total_time=$(FUZZ_SECONDS) \
		$(if $(filter-out 1,$(FUZZ_JOBS)),-jobs=$(FUZZ_JOBS) -workers=$(FUZZ_JOBS)) \
		-max_len=8192 -timeout=10 -rss_limit_mb=2048 \
		-dict=../../native/fuzz/http.dict -print_final_stats=1 $(FUZZ_FLAGS) corpus seeds

bench: setup
	$(VENV)/bin/specloop bench

lab-down: setup
	$(VENV)/bin/specloop lab down

clean:
	rm -rf build native/_gen specloop/_native*.so specloop/_core*.so specloop/*.egg-info *.egg-info
