import re

import pytest

pytestmark = pytest.mark.django_db
PAGES = ["/", "/accounts/signup/", "/accounts/login/", "/accounts/password/reset/", "/terms/", "/privacy/", "/models/"]


@pytest.mark.parametrize("url", PAGES)
def test_public_pages_render_with_the_layout_and_no_external_requests(client, url, tiny_version):
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<meta name="viewport"' in html and "/static/css/store.css" in html
    assert 'role="search"' in html
    for label in ["Store", "Models"]:
        assert f">{label}</a>" in html
    # Nothing loads from another host: every src/href is relative to this site.
    external = re.findall(r'(?:src|href)="(https?:)?//[^"]+"', html)
    assert external == []


def test_header_shows_account_links_by_login_state(client, user):
    html = client.get("/").content.decode()
    assert "Sign up" in html and "Log in" in html
    client.force_login(user)
    html = client.get("/").content.decode()
    assert f">{user.username}</a>" in html and 'action="/accounts/logout/"' in html


def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_static_files_are_served(client):
    response = client.get("/static/css/store.css")
    assert response.status_code == 200
    assert b"--accent" in b"".join(response.streaming_content)


def test_language_switcher_sets_simplified_chinese(client):
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert response.status_code == 302
    html = client.get("/").content.decode()
    assert '<html lang="zh-hans">' in html
    # The interface itself is translated (locale/zh_Hans): navigation and page text.
    assert ">商店</a>" in html and ">模型</a>" in html and "登录" in html
