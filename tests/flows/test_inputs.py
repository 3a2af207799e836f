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


def test_any_vqgan_yaml_and_checkpoint_by_path(tmp_path, models_dir):
    import shutil

    from engines.models import loaded
    from engines.models.registry import Prepared
    from tasks.select_models import prepare

    tiny = models_dir / "vqgan" / "generated_vqgan_f16_tiny"
    for where in ("a", "b b"):  # the same files at two paths
        (tmp_path / where).mkdir()
        shutil.copy(tiny / "model.yaml", tmp_path / where / "my.yaml")
        shutil.copy(tiny / "last.ckpt", tmp_path / where / "my.ckpt")
    prepared = []
    for where in ("a", "b b"):
        cfg = compose("vqgan=local", f"vqgan.config='{tmp_path / where / 'my.yaml'}'",
                      f"vqgan.checkpoint='{tmp_path / where / 'my.ckpt'}'",
                      f"runtime.models_dir={tmp_path / 'models'}", cache=tmp_path / "cache")
        assert cfg.vqgan.loader == "VQModel"  # read from the yaml's model.target
        prepared.append(prepare(cfg.vqgan, cfg.runtime.models_dir, download=False))
    assert prepared[0].folder == prepared[1].folder  # named by content
    assert Path(prepared[0].folder).name.startswith("local-")
    ident = [p.cache_identity() for p in prepared]
    assert ident[0]["entry"] == ident[1]["entry"] and ident[0] == ident[1]  # no paths in keys
    model = loaded.load(prepared[0].entry, prepared[0].folder, "cpu")
    assert model.quantize.embedding.weight.shape[0] == 64
    assert isinstance(prepared[0], Prepared)
    (tmp_path / "bad.yaml").write_text("model: {target: os.system}\n")
    with pytest.raises(ConfigError, match="^vqgan.config: bad value .*model.target"):
        compose("vqgan=local", f"vqgan.config={tmp_path / 'bad.yaml'}",
                f"vqgan.checkpoint={tmp_path / 'a' / 'my.ckpt'}", cache=tmp_path / "cache")
