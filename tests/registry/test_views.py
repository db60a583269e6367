import pytest

from tests.registry.test_services import make_source

pytestmark = pytest.mark.django_db


def test_registry_pages_show_versions_aliases_lineage_and_card(client, tiny_version):
    html = client.get("/models/").content.decode()
    assert "smollm2-135m-instruct" in html and "latest → v1" in html
    html = client.get("/models/smollm2-135m-instruct/").content.decode()
    assert "v1" in html and "Alias history" in html
    html = client.get("/models/smollm2-135m-instruct/v1/").content.decode()
    assert "model.safetensors" in html and "Model card" in html and "text-generation" in html


def test_private_model_pages_are_404_for_others(client, user, other_user, tmp_path):
    from apps.registry.services import model_version_register

    model_version_register(name="ft:demo:secret", source_dir=make_source(tmp_path), owner=user)
    for url in ["/models/ft:demo:secret/", "/models/ft:demo:secret/v1/"]:
        assert client.get(url).status_code == 404  # anonymous
        client.force_login(other_user)
        assert client.get(url).status_code == 404
        client.force_login(user)
        assert client.get(url).status_code == 200
        client.logout()
    client.force_login(other_user)
    assert "ft:demo:secret" not in client.get("/models/").content.decode()
    client.force_login(user)
    assert "ft:demo:secret" in client.get("/models/").content.decode()


def test_unknown_version_is_404(client, tiny_version):
    assert client.get("/models/smollm2-135m-instruct/v9/").status_code == 404


def _zip_names(response):
    import io
    import zipfile

    data = b"".join(response.streaming_content)
    return zipfile.ZipFile(io.BytesIO(data)), data


def test_download_a_version_as_a_zip(client, tiny_version):
    response = client.get("/models/smollm2-135m-instruct/v1/download")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert 'filename="smollm2-135m-instruct-v1.zip"' in response["Content-Disposition"]
    archive, _ = _zip_names(response)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "SHA256SUMS"} <= set(archive.namelist())


def test_an_adapter_downloads_also_as_merged_full_weights(client, user, other_user, tiny_version, tiny_hf_dir, tmp_path,
                                                         monkeypatch, django_capture_on_commit_callbacks):
    import torch
    from celery import current_app
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from apps.registry.services import model_version_register
    from apps.registry.tasks import merged_weights_build

    sent = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args: sent.append((name, args)))
    torch.manual_seed(0)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_hf_dir), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(tmp_path / "a")
    model_version_register(name="ft:smollm2-135m-instruct:u::ftjob-z", source_dir=tmp_path / "a", kind="lora", owner=user, base_version=tiny_version)
    url = "/models/ft:smollm2-135m-instruct:u::ftjob-z/v1/download"
    client.force_login(other_user)
    assert client.get(url).status_code == 404
    assert client.get(url, {"merged": "1"}).status_code == 404
    client.force_login(user)
    archive, _ = _zip_names(client.get(url))
    assert "adapter_model.safetensors" in archive.namelist()
    # Built once, by a task, then streamed: the first asks are answered at once.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.get(url, {"merged": "1"})
    assert response.status_code == 202 and response["Retry-After"] == "60"
    assert "Merged weights are being prepared, try again in a minute" in response.content.decode()
    assert [name for name, _ in sent] == ["apps.registry.tasks.merged_weights_build"]
    merged_weights_build(*sent[0][1])  # what the worker does
    response = client.get(url, {"merged": "1"})
    assert 'filename="ft_smollm2-135m-instruct_u__ftjob-z-v1-merged.zip"' in response["Content-Disposition"]
    archive, _ = _zip_names(response)
    assert "model.safetensors" in archive.namelist() and "adapter_config.json" not in archive.namelist()
    archive.extractall(tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert merged.config.num_hidden_layers == 2
    # The same weights as PEFT's own merge; kept beside the version, whose folder did not change.
    from apps.inference.loading import load_merged
    from apps.registry.models import ModelVersion
    from apps.registry.services import model_version_verify

    adapter = ModelVersion.objects.get(registered_model__name="ft:smollm2-135m-instruct:u::ftjob-z")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, load_merged(tiny_version.path, adapter.path)(ids).logits, atol=1e-5)
    model_version_verify(version=adapter)
    assert (adapter.path.parent / "merged" / "1" / "SHA256SUMS").is_file()
    assert "Merged weights: ready" in client.get("/models/ft:smollm2-135m-instruct:u::ftjob-z/v1/").content.decode()
    response = client.get("/models/smollm2-135m-instruct/v1/download", {"merged": "1"}, follow=True)
    assert "Only a LoRA adapter has merged weights" in response.content.decode()


def test_deleting_a_fine_tune_is_refused_while_an_app_runs_on_it(client, user, other_user, tiny_version, tiny_hf_dir, registry_root,
                                                                 django_capture_on_commit_callbacks):
    from apps.catalog.models import StoreApp
    from apps.registry.models import RegisteredModel
    from apps.registry.services import model_version_register

    model_version_register(name="ft:smollm2-135m-instruct:u::ftjob-d", source_dir=tiny_hf_dir, owner=user)
    app = StoreApp.objects.create(slug="uses-it", name="Uses it", short_description="x", creator=user,
                                  model_reference="ft:smollm2-135m-instruct:u::ftjob-d@latest")
    client.force_login(other_user)
    assert client.post("/models/ft:smollm2-135m-instruct:u::ftjob-d/delete").status_code == 404
    client.force_login(user)
    response = client.post("/models/ft:smollm2-135m-instruct:u::ftjob-d/delete", follow=True)
    assert "Apps run on this model (Uses it)" in response.content.decode()
    assert RegisteredModel.objects.filter(name="ft:smollm2-135m-instruct:u::ftjob-d").exists()
    app.model_reference = "smollm2-135m-instruct@latest"
    app.save()
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/models/ft:smollm2-135m-instruct:u::ftjob-d/delete")
    assert not RegisteredModel.objects.filter(name="ft:smollm2-135m-instruct:u::ftjob-d").exists()
    assert not (registry_root / "ft_smollm2-135m-instruct_u__ftjob-d").exists()
    # The store's own model: visible to all, nobody's to delete (403, as the API answers).
    assert client.post("/models/smollm2-135m-instruct/delete").status_code == 403
    assert RegisteredModel.objects.filter(name="smollm2-135m-instruct").exists()


def test_a_visible_model_of_someone_else_is_a_403_to_delete_and_a_private_one_a_404(client, user, other_user, tmp_path):
    from apps.registry.models import RegisteredModel
    from apps.registry.services import model_version_register

    model_version_register(name="shared", source_dir=make_source(tmp_path, name="a"), owner=user,
                           visibility=RegisteredModel.Visibility.PUBLIC)
    model_version_register(name="secret", source_dir=make_source(tmp_path, name="b"), owner=user)
    client.force_login(other_user)
    assert client.post("/models/shared/delete").status_code == 403
    assert client.post("/models/secret/delete").status_code == 404
    assert client.get("/models/shared/v1/").status_code == 200
    assert client.get("/models/secret/v1/").status_code == 404
    assert RegisteredModel.objects.filter(name__in=["shared", "secret"]).count() == 2
