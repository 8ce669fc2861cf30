# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
WHEELS ?= ../shared/wheels
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-deps bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is the CPU build on this machine's disk; the project's range
# (torch>=2.1,<3) is then already satisfied and no CUDA build is ever downloaded.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	@if ls $(WHEELS)/auto_lirpa-*.whl >/dev/null 2>&1; then \
		echo "installing the auto_LiRPA reference wheel from $(WHEELS) (--no-deps)"; \
		$(PIP) install -q --no-deps $(WHEELS)/auto_lirpa-*.whl && \
		$(PIP) install -q graphviz packaging appdirs tqdm; \
	else echo "no $(WHEELS): auto_LiRPA cross-checks will be skipped"; fi
	touch $(STAMP)

venv: $(STAMP)

# Headless Chromium renders the spec-sheet's HTML in one test; install it when apt can
# (as root), else that test skips and says why.
test-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's chromium for the HTML rendering test"; \
			(apt-get install -y -q chromium >/dev/null 2>&1 || \
			 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
			echo "could not install chromium: the HTML rendering test will skip"; \
		fi; }

test: $(STAMP) test-deps
	$(PY) -m pytest -q -n 2 tests

demo: $(STAMP)
	$(PY) -m auditai.demo.run --out demo_output

bench: $(STAMP)
	$(PY) benchmarks/bench_bounds.py
	$(PY) benchmarks/bench_verify.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
