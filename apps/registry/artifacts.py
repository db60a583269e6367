"""Files of a version folder: layout checks, checksums, the model card. No Django models here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

# The layout's naming lives beside the model server, which reads the registry without Django; the registry's
# callers keep using these names from here.
from apps.inference.layout import LayoutError, folder_for_model_id  # noqa: F401

CHECKSUMS_FILE = "SHA256SUMS"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
# Weights load from safetensors only: a pickle can run code when loaded.
FORBIDDEN_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
FULL_REQUIRED = ("config.json",)
ADAPTER_REQUIRED = ("adapter_config.json", "adapter_model.safetensors")


def check_layout(folder: Path, *, kind: str) -> None:
    """Refuse a folder that `from_pretrained` could not load as it is, or that holds pickled weights."""
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    bad = sorted(n for n in names if Path(n).suffix.lower() in FORBIDDEN_SUFFIXES)
    if bad:
        raise LayoutError(f"pickled weights are not accepted (safetensors only): {', '.join(bad)}")
    required = ADAPTER_REQUIRED if kind == "lora" else FULL_REQUIRED
    missing = [n for n in required if n not in names]
    if kind != "lora" and not any(n.endswith(".safetensors") for n in names):
        missing.append("*.safetensors")
    if missing:
        raise LayoutError(f"a {kind} version needs {', '.join(missing)} in {folder}")


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def compute_checksums(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != CHECKSUMS_FILE
    }


def write_checksums(folder: Path, checksums: dict[str, str]) -> None:
    # The `sha256sum -c` format, so the folder can be checked without this project too.
    lines = [f"{digest}  {name}\n" for name, digest in sorted(checksums.items())]
    (folder / CHECKSUMS_FILE).write_text("".join(lines), encoding="utf-8")


def verify_checksums(folder: Path, expected: dict[str, str]) -> list[str]:
    """Every difference between the folder and the recorded checksums, as readable lines (empty: all good)."""
    if not folder.is_dir():
        return [f"folder {folder} is missing"]
    problems = []
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS_FILE}
    for name, digest in sorted(expected.items()):
        if name not in present:
            problems.append(f"{name}: missing")
        elif sha256_file(folder / name) != digest:
            problems.append(f"{name}: sha256 differs from the recorded one")
    problems.extend(f"{name}: not part of the version" for name in sorted(present - expected.keys()))
    return problems


def make_read_only(folder: Path) -> None:
    """A version never changes: its files become read-only (0444), its folders readable by all (0755)."""
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o444)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_metrics(folder: Path, metrics: dict) -> None:
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def render_model_card(
    *,
    model_id: str,
    base_model: str | None,
    kind: str,
    description: str = "",
    datasets: list[str] | None = None,
    metrics: dict | None = None,
    source: dict | None = None,
    license: str = "apache-2.0",
    lineage: list[str] | None = None,
    task: str = "chat",
) -> str:
    """A Hugging Face model card: YAML header the Hub understands, then a short readable body."""
    classifier = task == "classifier"
    header = {
        "base_model": base_model,
        "license": license,
        "library_name": "peft" if kind == "lora" else "transformers",
        "pipeline_tag": "text-classification" if classifier else "text-generation",
        "datasets": list(datasets or []),
        "tags": ["gpt-store", "lora" if kind == "lora" else "sequence-classification" if classifier else "causal-lm"],
    }
    body = [f"# {model_id}", ""]
    if description:
        body += [description.strip(), ""]
    loading = (
        "PeftModel.from_pretrained(base, folder)  # base: the model named in base_model"
        if kind == "lora"
        else "AutoModelForSequenceClassification.from_pretrained(folder)  # labels: config.id2label"
        if classifier
        else "AutoModelForCausalLM.from_pretrained(folder)"
    )
    body += ["## How to load", "", "```python", loading, "```", ""]
    if lineage and len(lineage) > 1:
        body += ["## Lineage", "", " -> ".join(lineage), ""]
        if kind == "lora" and len(lineage) > 2:
            body += [("Where its base is itself a LoRA adapter, load the chain from its root, merging each adapter in "
                      "turn (or start from the base's merged weights, a download on its version page)."), ""]
    if source:
        body += ["## Source", ""] + [f"- {k}: {v}" for k, v in sorted(source.items())] + [""]
    figures = {k: v for k, v in (metrics or {}).items() if not isinstance(v, dict | list)}
    if figures:
        body += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        body += [f"| {k} | {v} |" for k, v in sorted(figures.items())] + [""]
    if (metrics or {}).get("evaluation"):
        body += _evaluation_section(metrics["evaluation"])
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + "\n".join(body)


def _evaluation_section(evaluation: dict) -> list[str]:
    """The card's evaluation (issue 15's gate): base against this version on held-out data, the gate's decision, and
    a few answers side by side (one line each: the card is read as text)."""
    def line(text) -> str:
        return " ".join(str(text).split()) or "(empty)"

    def figure(value, digits=4) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    split = evaluation.get("split") or {}
    if not split.get("examples"):
        return ["## Evaluation", "", "No held-out data: the training file was too small to hold some out.", ""]
    where = "the validation file" if split.get("source") == "validation_file" else f"examples held out of the training file (seed {split.get('seed')})"
    body = ["## Evaluation", "", f"On {split['examples']} {where}:", "",
            "| model | validation loss | exact match |", "| --- | --- | --- |"]
    for label, key in (("base", "base"), ("this version", "tuned")):
        side = evaluation.get(key) or {}
        body.append(f"| {label} | {figure(side.get('loss'))} | {figure(side.get('exact_match'), 2)} |")
    current = evaluation.get("current")
    if current:
        body.append(f"| latest before it ({current.get('reference')}) | {figure(current.get('loss'))} | – |")
    body.append("")
    gate = evaluation.get("gate")
    if gate:
        body += [f"Gate: {gate.get('reason', '')}", ""]
    pairs = evaluation.get("pairs") or []
    if pairs:
        body += ["### Answers on held-out prompts (greedy)", ""]
        for pair in pairs:
            body += [f"- prompt: {line(pair['prompt'])}", f"  - expected: {line(pair['expected'])}",
                     f"  - base: {line(pair['base'])}", f"  - this version: {line(pair['tuned'])}"]
        body.append("")
    return body


def read_model_card(folder: Path) -> tuple[dict, str]:
    """The card's YAML header and its body."""
    text = (folder / CARD_FILE).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}, text
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header) or {}, body.lstrip("\n")
