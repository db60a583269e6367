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
