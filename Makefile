# The two commands of the README:
#   make book   build (execute) the book into _build/html
#   make test   every test: unit tests, nbmake on every chapter, then a book build that fails on any warning,
#               on MathJax from a CDN or on an untranslated MyST role (.ci/check_html.py), then every chapter
#               opened offline in headless Chromium (.ci/browser_check.py; screenshots in .ci/test-tree/_build), then
#               two chapters run as in a fresh Colab runtime (.ci/colab_sim.py)
# Both create .venv on first use. On these machines torch comes from a local copy; elsewhere set TORCH,
# e.g. make test TORCH="torch torchvision".
PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The test run executes the chapters once, in a copy of the tree, so the working copy keeps no outputs
# (not under _build/: nbmake skips every path with a part named _build).
TESTTREE := .ci/test-tree
export DDPM_LITE_CACHE ?= $(CURDIR)/_build/cache

.PHONY: book test unit notebooks book-strict browser chromium colab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[book,test]"
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --keep-going
	@echo "The book is at $(CURDIR)/_build/html/index.html"

test: chromium unit notebooks book-strict browser colab

unit: $(STAMP)
	$(BIN)/python -m pytest tests

notebooks: $(STAMP)
	rm -rf $(TESTTREE) && mkdir -p $(TESTTREE)
	git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t $(TESTTREE)
	# nbmake executes every chapter below and stores the outputs; the strict build then only renders them.
	sed -i 's/^  execute_notebooks: auto/  execute_notebooks: "off"/' $(TESTTREE)/_config.yml
	grep -q 'execute_notebooks: "off"' $(TESTTREE)/_config.yml
	cd $(TESTTREE) && $(CURDIR)/$(BIN)/python -m pytest --nbmake --nbmake-timeout=300 --overwrite \
		-p no:cacheprovider --durations=0 book

book-strict: notebooks
	$(BIN)/jupyter-book build $(TESTTREE) -W --keep-going
	$(BIN)/python .ci/check_html.py $(TESTTREE)/_build/html
	@echo "The test build of the book is at $(CURDIR)/$(TESTTREE)/_build/html/index.html"

# The browser test opens the built site in Debian's Chromium (driven by Playwright from the test extra; no
# browser is downloaded). It checks the test build; after `make book`: make browser BROWSER_HTML=_build/html
BROWSER_HTML ?= $(TESTTREE)/_build/html
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser: $(STAMP) chromium
	$(BIN)/python .ci/browser_check.py $(BROWSER_HTML)

# Chapters as a Colab reader meets them (.ci/colab_sim.py): a venv with only Colab's packages (built once in
# _build/colab-sim/venv), cwd outside the repository, the setup cell's own pip install sent to a clone of HEAD.
COLAB_CHAPTERS := book/forward_process.ipynb book/sampling.ipynb
colab: $(STAMP)
	$(BIN)/python .ci/colab_sim.py --repo . --torch "$(TORCH)" $(COLAB_CHAPTERS)

# Chromium and a CJK font (the notation table is bilingual) from apt, on a machine that lacks them.
chromium:
	@if ! command -v chromium >/dev/null || [ -z "$$(fc-list :lang=zh 2>/dev/null)" ]; then \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium fonts-noto-cjk; fi

clean:
	rm -rf _build
