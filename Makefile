# Exploding Gradients: the entry points. `make help` lists them.
#
# Each target sets up what it needs: the first run creates .venv and installs
# PyTorch, labkit and the book, grading and test tools at the exact versions in
# constraints.txt; later runs reuse it and start at once.
#
# PyTorch is installed first and on its own, so a GPU user can choose the build:
#   make test TORCH_INDEX_URL=<PyTorch wheel index for your CUDA version>
# TORCH_SPEC is any pip requirement for torch, e.g. a different version.
# To change the PyTorch build of an existing .venv, run `make distclean` first.

PYTHON          ?= python3
TORCH_SPEC      ?= torch==2.13.0
TORCH_INDEX_URL ?=
# --dist loadgroup: the tests that share one build of the book run in one worker, so it is built once.
PYTEST_ARGS     ?= -n auto --dist loadgroup
SYSTEM_PACKAGES := chromium bubblewrap postgresql

VENV  := .venv
BIN   := $(VENV)/bin
PIP   := $(BIN)/python -m pip
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv system-deps book book-cache test lab release grade bench lock clean distclean

help:
	@echo "make book         build the book into _build/html (open _build/html/index.html)"
	@echo "make test         run all tests"
	@echo "make lab          open JupyterLab on the problem sets in exercises/"
	@echo "make release      regenerate the student problem sets in exercises/ from solutions/"
	@echo "make grade ASSIGNMENT=ps01 SUBMISSIONS=<folder or zip>"
	@echo "                  autograde a class in parallel and sandboxed; feedback and CSV in grades/<set>/"
	@echo "make bench        run the benchmarks"
	@echo "make clean        remove build outputs (keeps .venv)"
	@echo "make distclean    also remove .venv"
	@echo "make lock         rewrite constraints.txt from the current .venv"

venv: $(STAMP)

# Torch goes in with --no-deps so that TORCH_INDEX_URL serves torch alone; its
# dependencies then come, pinned, with everything else.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c constraints.txt --upgrade pip
	$(PIP) install --quiet --no-deps $(if $(TORCH_INDEX_URL),--index-url '$(TORCH_INDEX_URL)') '$(TORCH_SPEC)'
	$(PIP) install --quiet -c constraints.txt -e '.[book,grading,dev]'
	touch $@

# Debian packages some tests need (a headless browser, a sandbox, a database).
# Installed only when missing and only as root; tests that need them skip when
# they are absent.
system-deps:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "Not installing system packages (needs root and apt-get):$$missing"; \
	fi

# --all re-reads every chapter (their executed outputs still come from the cache): Sphinx reports a
# warning only while it reads a page, so an incremental build after a failed one would pass in silence.
book: book-cache
	$(BIN)/jupyter-book build . --all -W -n --keep-going

# Jupyter Book reruns a chapter only when its code cells change (jupyter-cache keys on them alone), so
# after a change to labkit it would show outputs of the old labkit. This empties the cache whenever
# labkit's sources or the environment change: BOOK_CACHE_KEY holds a hash of labkit/*.py (names and
# contents) and of the install stamp's time, which `make venv` renews on every (re)install.
BOOK_CACHE     := _build/.jupyter_cache
BOOK_CACHE_KEY := _build/.jupyter_cache.key
LABKIT_SOURCES := $(sort $(wildcard labkit/*.py))

book-cache: $(STAMP)
	@key="$$( { sha256sum $(LABKIT_SOURCES); stat -c %Y $(STAMP); } | sha256sum )"; \
	if [ "$$key" != "$$(cat $(BOOK_CACHE_KEY) 2>/dev/null)" ]; then \
		if [ -d $(BOOK_CACHE) ]; then echo "labkit or the environment changed: re-executing every chapter"; fi; \
		rm -rf $(BOOK_CACHE) && mkdir -p $(dir $(BOOK_CACHE_KEY)) && echo "$$key" > $(BOOK_CACHE_KEY); \
	fi

test: system-deps $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Jupyter refuses to start as root (as in many containers) unless told to.
lab: $(STAMP)
	@test -d exercises || { echo "exercises/ does not exist yet: no problem set has been released"; exit 1; }
	$(BIN)/jupyter lab --ServerApp.root_dir=exercises $(if $(filter 0,$(shell id -u)),--allow-root)

release: $(STAMP)
	$(BIN)/python -m course release

# GRADE_ARGS passes more options, e.g. GRADE_ARGS="--db postgresql://... --workers 8";
# `.venv/bin/python -m course grade --help` lists them. Installs bubblewrap (the sandbox) when root.
grade: $(STAMP)
	@test -n "$(ASSIGNMENT)" -a -n "$(SUBMISSIONS)" || \
		{ echo "usage: make grade ASSIGNMENT=ps01 SUBMISSIONS=<folder or zip> [GRADE_ARGS=...]"; exit 2; }
	@$(MAKE) --no-print-directory system-deps SYSTEM_PACKAGES=bubblewrap
	$(BIN)/python -m course grade '$(ASSIGNMENT)' '$(SUBMISSIONS)' $(GRADE_ARGS)

# Writes benchmarks/results/latest.{json,md} and scaling.png; the book's appendix reads latest.json.
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--quick" or BENCH_ARGS="--only lstm scaling" (see --help).
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Pins every installed package except labkit itself and the PyTorch build,
# which TORCH_SPEC chooses.
lock: $(STAMP)
	{ echo "# Exact versions for a reproducible build; regenerate with 'make lock'."; \
	  $(PIP) freeze --all --exclude-editable | grep -v -E '^(torch|triton|nvidia-[a-z0-9-]+)=='; \
	} > constraints.txt
	touch $(STAMP)

clean:
	rm -rf _build .pytest_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
