# matcv — `make bench TASK=segmentation` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TASK ?= segmentation
PROFILE ?= quick
DATA ?=
ARGS ?=
STAMP := $(VENV)/.installed
# The tasks are the task YAMLs (a named dataset's is <task>-<dataset>.yaml): nothing to keep in step by hand.
TASKS := $(sort $(basename $(notdir $(wildcard benchmarks/configs/*.yaml))))

.PHONY: install bench data leaderboard verify submit browser test test-slow clean help

help:
	@echo "make bench TASK=segmentation [PROFILE=quick|paper] [DATA=/path/to/data_root|superalloy] [ARGS='--models unet']"
	@echo "                  TASK: $(TASKS)"
	@echo "make test         fast test suite (tiny generated data)"
	@echo "make test-slow    slow checks too (DDP on CPU, bigger end-to-end runs)"
	@echo "make data         generate the built-in synthetic data for TASK/PROFILE"
	@echo "make leaderboard  rebuild leaderboard tables from runs/, validate submissions, write leaderboard/site/index.html (interactive; open from disk)"
	@echo "make verify       recompute every run's metrics from its saved test predictions (runs/)"
	@echo "make submit TASK=segmentation MODEL=my_pkg.my_module:build NAME=my-net [PROFILE=quick] [MODEL_PATH=.] [ARGS='--authors ... --dataset ...']"
	@echo "                  TASK: a task whose YAML has a submission block (\`$(BIN)/matcv submit --help\` lists them)"
	@echo "make browser      install Debian's chromium (headless screenshot test of the HTML leaderboard)"

# The virtual environment is (re)built when pyproject.toml changes. torch/torchvision come from the
# package registry (CUDA builds, which also run on CPU).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

bench: install
	$(BIN)/matcv bench --task $(TASK) --profile $(PROFILE) $(if $(DATA),--data $(DATA)) $(ARGS)

data: install
	$(BIN)/matcv data --task $(TASK) --profile $(PROFILE)

leaderboard: install
	$(BIN)/matcv leaderboard

verify: install
	$(BIN)/matcv verify

# An external model (a factory returning an nn.Module, or a LightningModule class) on the official folds;
# MODEL_PATH is put on sys.path first (default: this folder).
MODEL ?=
NAME ?=
MODEL_PATH ?= .
submit: install
	@test -n "$(MODEL)" -a -n "$(NAME)" || { echo "usage: make submit TASK=segmentation MODEL=my_pkg.my_module:build NAME=my-net"; exit 2; }
	$(BIN)/matcv submit --task $(TASK) --profile $(PROFILE) --model $(MODEL) --name $(NAME) --model-path $(MODEL_PATH) $(ARGS)

browser:
	command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }

test: install
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: install
	$(BIN)/python -m pytest -m slow -q

clean:
	rm -rf runs leaderboard/results .cache lightning_logs .pytest_cache
