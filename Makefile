# specloop: `make demo` and `make test` set up what they need (as root on
# Debian 12: apt packages, .venv, the project) and are safe to run again.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.specloop-installed

# build: clang + libxdp/libbpf; lab: iproute2, ethtool, nftables;
# tests and benchmarks: curl, wrk, nginx, ping, tcpdump
APT_PACKAGES := clang llvm libxdp-dev libbpf-dev libelf-dev zlib1g-dev \
	pkg-config gcc make iproute2 ethtool nftables curl wrk nginx \
	iputils-ping tcpdump xdp-tools bpftool util-linux libcap2-bin

NATIVE := $(wildcard native/*.c native/*.h native/bpf/*.c native/build.py)

.PHONY: all demo test test-fast system setup asan bench soak lab-down clean

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

setup: system $(STAMP)

demo: setup
	$(VENV)/bin/specloop demo

test: setup
	$(PY) -m pytest -q --require-lab -p no:cacheprovider

test-fast: setup
	$(PY) -m pytest -q -x --require-lab -p no:cacheprovider -m "not slow"

# the native engine with AddressSanitizer + UBSan, then the tests under it
asan: system $(VENV)/bin/python
	SPECLOOP_SANITIZE=1 $(PIP) install -q -e '.[dev]'
	rm -f $(STAMP)
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
		$(PY) -m pytest -q --require-lab -p no:cacheprovider -m "not slow"
	$(PIP) install -q -e '.[dev]' && touch $(STAMP)

bench: setup
	$(VENV)/bin/specloop bench

lab-down: setup
	$(VENV)/bin/specloop lab down

clean:
	rm -rf build native/_gen specloop/_native*.so specloop/*.egg-info *.egg-info
