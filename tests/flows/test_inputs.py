"""Inputs a notebook user has: init images and image prompts by URL (fetched once, kept by
content), and any VQGAN yaml/ckpt pair by path (vqgan=local)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from PIL import Image

from engines.core.errors import ConfigError
from flows.render import compose_config


@pytest.fixture()
def server(tmp_path):
    """A local HTTP server of tmp_path/www; `requests` counts the GETs it answered."""
    www = tmp_path / "www"
    www.mkdir()
    Image.new("RGB", (32, 18), (10, 200, 30)).save(www / "start.png")
    (www / "notes.png").write_text("not an image")
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, hits, httpd
    httpd.shutdown()


def compose(*overrides: str, cache: Path):
    return compose_config(["film=smoke", f"runtime.cache_dir={cache}", *overrides])


def test_url_inputs_are_fetched_once_and_kept_by_content(server, tmp_path):
    url, www, hits, httpd = server
    cache = tmp_path / "cache"
    cfg = compose(f"+film.shots.0.init_image='{url}/start.png'",
                  f"+film.shots.1.image_prompts=['{url}/start.png:0.5']", cache=cache)
    digest = hashlib.sha256((www / "start.png").read_bytes()).hexdigest()
    local = cache / "inputs" / f"{digest}.png"
    assert cfg.film.shots[0].init_image == str(local) and local.is_file()
    assert cfg.film.shots[1].image_prompts == (f"{local}:0.5:-inf",)
    plans = cfg.shot_plans()
    assert plans[0].init_image == str(local)
    assert plans[1].image_prompts == ((str(local), 0.5, float("-inf")),)
    assert hits == ["/start.png"]  # the two uses share one download
    httpd.shutdown()  # offline now: the record and the file are enough
    again = compose(f"+film.shots.0.init_image='{url}/start.png'", cache=cache)
    assert again.film.shots[0].init_image == str(local) and hits == ["/start.png"]


@pytest.mark.parametrize(("name", "why"), [("missing.png", "cannot fetch it (HTTPError"),
                                           ("notes.png", "what it serves is not an image")])
def test_a_bad_url_names_the_key(server, tmp_path, name, why):
    url = server[0]
    with pytest.raises(ConfigError) as info:
        compose(f"+film.shots.0.init_image='{url}/{name}'", cache=tmp_path / "cache")
    msg = str(info.value)
    assert msg.startswith(f"film.shots.0.init_image: bad value '{url}/{name}'; accepted: an image "
                          "URL that answers") and why in msg
