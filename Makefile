# The two commands of the README:
#   make book   build (execute) the book into _build/html, and its Chinese edition into _build/html/zh
#   make test   every test: unit tests, the zh catalogs and notebooks (.ci/i18n.py: nothing untranslated, fuzzy or
#               out of date), nbmake on every chapter, then both editions built so that they fail on any warning,
#               on MathJax from a CDN or on an untranslated MyST role (.ci/check_html.py), then every chapter
#               opened offline in headless Chromium (.ci/browser_check.py; screenshots in .ci/test-tree/_build), then
#               three chapters (one of them Chinese) run as in a fresh Colab runtime (.ci/colab_sim.py)
# For translators: make catalogs (after an English edit), make zh-notebooks (after a catalog edit).
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

ZH := zh_CN
.PHONY: book test unit i18n catalogs zh-notebooks notebooks book-strict browser chromium colab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[book,test]"
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --keep-going
	$(BIN)/python .ci/i18n.py html --lang $(ZH) . _build/html/zh
	@echo "The book is at $(CURDIR)/_build/html/index.html (中文: $(CURDIR)/_build/html/zh/index.html)"

test: chromium unit i18n notebooks book-strict browser colab

# The Chinese edition's sources: every catalog message translated and none fuzzy against the English as it is now,
# the markup of each translation intact, and book/zh/*.ipynb exactly what book/*.ipynb and the catalogs produce.
i18n: $(STAMP)
	$(BIN)/python .ci/i18n.py check
	$(BIN)/python .ci/i18n.py notebooks --check

catalogs: $(STAMP)
	$(BIN)/python .ci/i18n.py extract

zh-notebooks: $(STAMP)
	$(BIN)/python .ci/i18n.py notebooks

unit: $(STAMP)
	$(BIN)/python -m pytest tests

notebooks: $(STAMP)
	rm -rf $(TESTTREE) && mkdir -p $(TESTTREE)
	git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t $(TESTTREE)
	# nbmake executes every chapter below and stores the outputs; the strict build then only renders them.
	sed -i 's/^  execute_notebooks: cache/  execute_notebooks: "off"/' $(TESTTREE)/_config.yml
	grep -q 'execute_notebooks: "off"' $(TESTTREE)/_config.yml
	# The English chapters only: book/zh/ holds the same code cells (the Colab simulation runs one of them).
	cd $(TESTTREE) && $(CURDIR)/$(BIN)/python -m pytest --nbmake --nbmake-timeout=300 --overwrite \
		-p no:cacheprovider --durations=0 book/*.ipynb

book-strict: notebooks
	$(BIN)/jupyter-book build $(TESTTREE) -W --keep-going
	$(BIN)/python .ci/i18n.py html --lang $(ZH) $(TESTTREE) $(TESTTREE)/_build/html/zh -W
	$(BIN)/python .ci/check_html.py $(TESTTREE)/_build/html  # both editions: zh/ is inside
	@echo "The test build of the book is at $(CURDIR)/$(TESTTREE)/_build/html/index.html"

# The browser test opens the built site in Debian's Chromium (driven by Playwright from the test extra; no
# browser is downloaded). It checks the test build; after `make book`: make browser BROWSER_HTML=_build/html
BROWSER_HTML ?= $(TESTTREE)/_build/html
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser: $(STAMP) chromium
	$(BIN)/python .ci/browser_check.py $(BROWSER_HTML)

# Chapters as a Colab reader meets them (.ci/colab_sim.py): a venv with only Colab's packages (built once in
# _build/colab-sim/venv), cwd outside the repository, the setup cell's own pip install sent to a clone of HEAD.
COLAB_CHAPTERS := book/forward_process.ipynb book/sampling.ipynb book/zh/forward_process.ipynb
colab: $(STAMP)
	$(BIN)/python .ci/colab_sim.py --repo . --torch "$(TORCH)" $(COLAB_CHAPTERS)

# Chromium and a CJK font (the notation table is bilingual) from apt, on a machine that lacks them.
chromium:
	@if ! command -v chromium >/dev/null || [ -z "$$(fc-list :lang=zh 2>/dev/null)" ]; then \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium fonts-noto-cjk; fi

clean:
	rm -rf _build
