"""A fine-tune of a LoRA fine-tune on the model server's side (no database): an adapter whose base is an adapter
resolves to the whole chain, root last; a chain longer than ADAPTER_CHAIN_MAX, or one that loops, is refused."""

import json

import pytest

from apps.inference.layout import ADAPTER_CHAIN_MAX, folder_for_model_id
from apps.inference.server import RegistryFolders
from apps.inference.types import ModelUnavailable


def version(root, model_id, *, base=None):
    folder = root / folder_for_model_id(model_id) / "1"
    folder.mkdir(parents=True)
    if base is None:
        (folder / "config.json").write_text("{}")
    else:
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    return folder


def test_an_adapter_on_an_adapter_resolves_to_its_chain(tmp_path):
    version(tmp_path, "base")
    version(tmp_path, "ft:base:alice::ftjob-1", base="base@v1")
    version(tmp_path, "ft:base:alice::ftjob-2", base="ft:base:alice::ftjob-1@v1")
    spec = RegistryFolders(tmp_path).spec("ft:base:alice::ftjob-2@v1")
    chain = []
    while spec is not None:
        chain.append((spec.key, spec.kind))
        spec = spec.base
    assert chain == [("ft:base:alice::ftjob-2@v1", "lora"), ("ft:base:alice::ftjob-1@v1", "lora"), ("base@v1", "full")]


def test_a_chain_too_long_or_looping_is_refused(tmp_path):
    version(tmp_path, "base")
    previous = "base@v1"
    for n in range(ADAPTER_CHAIN_MAX + 1):
        version(tmp_path, f"a{n}", base=previous)
        previous = f"a{n}@v1"
    folders = RegistryFolders(tmp_path)
    assert folders.spec(f"a{ADAPTER_CHAIN_MAX - 1}@v1").base is not None  # ADAPTER_CHAIN_MAX adapters: served
    with pytest.raises(ModelUnavailable, match="sits on more than"):
        folders.spec(f"a{ADAPTER_CHAIN_MAX}@v1")
    version(tmp_path, "loop", base="loop@v1")
    with pytest.raises(ModelUnavailable, match="sits on more than"):
        folders.spec("loop@v1")
