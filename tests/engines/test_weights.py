"""engines/models/weights.py: the registry entries, downloads (offline failure, resume, verification)
against a local HTTP server with Range support, preflight, and generated models."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from engines.core.errors import ConfigError, MissingWeightsError
from engines.models import registry, weights
from engines.models.weights import ModelEntry, RemoteFile, VerificationError

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
REAL_VQGAN = {"vqgan_imagenet_f16_1024": "VQModel", "vqgan_imagenet_f16_16384": "VQModel",
              "vqgan_gumbel_f8_8192": "GumbelVQ", "wikiart_16384": "VQModel",
              "sflckr": "Net2NetTransformer", "coco": "Net2NetTransformer",
              "faceshq": "Net2NetTransformer", "ade20k": "Net2NetTransformer",
              "ffhq": "Net2NetTransformer", "celebahq": "Net2NetTransformer",
              "wikiart_1024": "VQModel"}
GENERATED_VQGAN = {"generated_vqgan_f16_tiny", "generated_vqgan_f16_16384",
                   "generated_gumbel_f8_tiny"}
REAL_CLIP = {"vit_b_32_openai": ("ViT-B-32", "openai"), "vit_b_16_openai": ("ViT-B-16", "openai"),
             "vit_l_14_openai": ("ViT-L-14", "openai"), "rn50_openai": ("RN50", "openai"),
             "vit_b_32_laion2b_s34b_b79k": ("ViT-B-32", "laion2b_s34b_b79k")}
PAYLOAD = bytes(range(256)) * 1200  # 307200 bytes served by the local server
SHA = hashlib.sha256(PAYLOAD).hexdigest()


# --- registry ------------------------------------------------------------------------------

def test_registry_has_exactly_the_documented_entries():
    assert set(registry.list_entries("vqgan", CONF)) == set(REAL_VQGAN) | GENERATED_VQGAN | {
        "local"}  # vqgan=local: your own yaml/ckpt pair by path
    assert set(registry.list_entries("clip", CONF)) == set(REAL_CLIP) | {
        "generated_clip_tiny", "generated_clip_vit_b_32"}
    for kind in ("vqgan", "clip"):
        for name in registry.list_entries(kind, CONF):
            entry = registry.load_entry(kind, name, CONF)
            assert (entry.name, entry.kind) == (name, kind)


def test_real_vqgan_entries():
    approx = {"vqgan_imagenet_f16_1024": 958_000_000, "vqgan_imagenet_f16_16384": 980_000_000,
              "vqgan_gumbel_f8_8192": 376_000_000, "coco": 8_400_000_000,
              "wikiart_1024": 958_000_000}
    for name, loader in REAL_VQGAN.items():
        e = registry.load_entry("vqgan", name, CONF)
        assert e.loader == loader and e.source == "url"
        names = [f.name for f in e.files]
        assert names == ["model.yaml", "last.ckpt"]
        assert [f.optional for f in e.files] == [name == "ade20k", False]
        assert all(f.sha256 is None and f.size is None for f in e.files)
        assert "sha256 unknown" in e.notes
        ckpt = e.files[-1]
        assert ckpt.approx_size == approx.get(name)
        if e.source == "url":
            assert all(f.url.startswith(("https://", "http://")) for f in e.files)
    assert "config" in registry.load_entry("vqgan", "ade20k", CONF).notes
    mirror = "https://github.com/Eleiber/VQGAN-Mirrors/releases/download/0.0.1/"
    assert registry.load_entry("vqgan", "wikiart_1024", CONF).files[1].url == \
        mirror + "wikiart_1024.ckpt"
    assert registry.load_entry("vqgan", "wikiart_16384", CONF).files[1].mirrors == \
        (mirror + "wikiart_16384.ckpt",)
    assert registry.load_entry("vqgan", "vqgan_imagenet_f16_16384", CONF).files[1].url == (
        "https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p=%2Fckpts%2Flast.ckpt&dl=1")


def test_clip_entries_point_at_the_hub_repo_open_clip_uses():
    import open_clip

    for name, (model, tag) in REAL_CLIP.items():
        e = registry.load_entry("clip", name, CONF)
        assert (e.source, e.arch["model"], e.arch["pretrained"]) == ("open_clip", model, tag)
        repo = open_clip.get_pretrained_cfg(model, tag)["hf_hub"].rstrip("/")
        [f] = e.files
        assert f.url == f"https://huggingface.co/{repo}/resolve/main/{f.name}"
        assert f.name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    assert yaml.safe_load((CONF / "config.yaml").read_text())["defaults"][3] == {
        "clip": "vit_b_32_openai"}


def test_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError) as err:
        registry.load_entry("vqgan", "imagenet_16384", CONF)
    assert "imagenet_16384" in str(err.value) and "vqgan_imagenet_f16_16384" in str(err.value)
    assert err.value.key == "vqgan"
    with pytest.raises(ConfigError, match="kind"):
        registry.load_entry("diffusion", "x", CONF)


def test_entry_file_must_match_its_name_and_schema(tmp_path):
    src = (CONF / "vqgan" / "generated_vqgan_f16_tiny.yaml").read_text()
    (tmp_path / "vqgan").mkdir()
    (tmp_path / "vqgan" / "tiny2.yaml").write_text(src)
    with pytest.raises(ConfigError, match="one name, one string"):
        registry.load_entry("vqgan", "tiny2", tmp_path)
    (tmp_path / "vqgan" / "tiny3.yaml").write_text(
        src.replace("generated_vqgan_f16_tiny", "tiny3") + "colour: red\n")
    with pytest.raises(ConfigError, match="colour"):
        registry.load_entry("vqgan", "tiny3", tmp_path)


def test_model_entry_validation():
    with pytest.raises(ValidationError, match="files must be empty"):
        ModelEntry(name="x", kind="clip", source="generated", arch={"a": 1},
                   files=[RemoteFile(name="w.bin", url="https://e.org/w")])
    with pytest.raises(ValidationError, match="64 lowercase hex"):
        RemoteFile(name="w.bin", url="https://e.org/w", sha256="ABC")
    with pytest.raises(ValidationError, match="plain file name"):
        RemoteFile(name="../w.bin", url="https://e.org/w")
    with pytest.raises(ValidationError, match="loader"):
        ModelEntry(name="x", kind="vqgan", source="url", loader="VQGAN",
                   files=[RemoteFile(name="last.ckpt", url="https://e.org/w")])
    with pytest.raises(ValidationError, match="needs a url"):
        ModelEntry(name="x", kind="vqgan", source="url", loader="VQModel",
                   files=[RemoteFile(name="last.ckpt")])


def test_default_models_dir(monkeypatch):
    monkeypatch.setenv("PROMPTREEL_MODELS", "/srv/models")
    assert registry.default_models_dir() == Path("/srv/models")
    monkeypatch.delenv("PROMPTREEL_MODELS")
    assert registry.default_models_dir() == Path.home() / ".cache" / "promptreel" / "models"


# --- downloads -----------------------------------------------------------------------------

def host_resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def test_offline_download_fails_fast_with_the_fix(tmp_path):
    if host_resolves("heibox.uni-heidelberg.de"):
        pytest.skip("online: this test must not download 980 MB")
    entry = registry.load_entry("vqgan", "vqgan_imagenet_f16_16384", CONF)
    started = time.monotonic()
    with pytest.raises(MissingWeightsError) as err:
        weights.ensure_files(entry, tmp_path)
    assert time.monotonic() - started < 30
    msg = str(err.value)
    dest = tmp_path / "vqgan" / "vqgan_imagenet_f16_16384" / "model.yaml"
    assert str(dest) in msg and entry.files[0].url in msg
    assert "make fetch-models conf=" in msg and "by hand" in msg
    assert list(tmp_path.rglob("*")) == []


DEAD = ModelEntry(name="gone", kind="vqgan", source="dead", loader="VQModel",
                  files=(RemoteFile(name="model.yaml"), RemoteFile(name="last.ckpt")),
                  notes="its host is gone; use another VQGAN")


def test_dead_and_disabled_downloads(tmp_path):
    with pytest.raises(MissingWeightsError, match="host is dead") as err:
        weights.ensure_files(DEAD, tmp_path)
    assert str(tmp_path / "vqgan" / "gone" / "model.yaml") in str(err.value)
    entry = registry.load_entry("clip", "vit_b_32_openai", CONF)
    with pytest.raises(MissingWeightsError, match="runtime.download=false"):
        weights.ensure_files(entry, tmp_path, download=False)
    assert list(tmp_path.rglob("*")) == []


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.files with Range support; server.mode tweaks the behaviour."""

    def log_message(self, *args):
        pass

    def do_HEAD(self):  # noqa: N802 - what `make doctor` asks
        srv = self.server
        srv.requests.append((f"HEAD {self.path}", None))
        body = srv.files.get(self.path)
        if body is None or srv.mode == "no_head":
            self.send_error(404 if body is None else 405)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and srv.mode != "ignore_range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if srv.mode == "html" else
                         "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if srv.mode == "truncate":
            srv.mode = ""
            self.wfile.write(body[start:start + 100_000])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.requests, srv.mode = {"/w.bin": PAYLOAD, "/other.bin": PAYLOAD[:-1]}, [], ""
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def entry_for(srv, path="/w.bin", **check) -> ModelEntry:
    return ModelEntry(name="local", kind="clip", source="open_clip",
                      arch={"model": "ViT-B-32", "pretrained": "openai"},
                      files=[RemoteFile(name="w.bin", url=srv.url + path, **check)])


def dest_of(models: Path) -> Path:
    return models / "clip" / "local" / "w.bin"


def test_download_verify_and_reuse(server, tmp_path):
    entry = entry_for(server, size=len(PAYLOAD), sha256=SHA)
    paths = weights.ensure_files(entry, tmp_path)
    assert paths == {"w.bin": dest_of(tmp_path)} and dest_of(tmp_path).read_bytes() == PAYLOAD
    assert not dest_of(tmp_path).with_name("w.bin.part").exists()
    assert weights.ensure_files(entry, tmp_path) == paths  # present: no second request
    assert len(server.requests) == 1
    assert weights.missing_files([entry], tmp_path) == []


def test_resume_sends_range_and_completes(server, tmp_path):
    part = dest_of(tmp_path).with_name("w.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:123_456])
    weights.ensure_files(entry_for(server, size=len(PAYLOAD), sha256=SHA), tmp_path)
    assert server.requests == [("/w.bin", "bytes=123456-")]
    assert dest_of(tmp_path).read_bytes() == PAYLOAD and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.mode = "ignore_range"
    part = dest_of(tmp_path).with_name("w.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 100)
    weights.ensure_files(entry_for(server, sha256=SHA), tmp_path)
    assert dest_of(tmp_path).read_bytes() == PAYLOAD


def test_interrupted_download_keeps_part_and_resumes(server, tmp_path):
    server.mode = "truncate"
    entry = entry_for(server, size=len(PAYLOAD), sha256=SHA)
    with pytest.raises(MissingWeightsError, match="run again to resume"):
        weights.ensure_files(entry, tmp_path)
    part = dest_of(tmp_path).with_name("w.bin.part")
    kept = part.stat().st_size  # whole 64 KiB blocks received before the break
    assert kept == 65536 and not dest_of(tmp_path).exists()
    weights.ensure_files(entry, tmp_path)
    assert server.requests[-1] == ("/w.bin", f"bytes={kept}-")
    assert dest_of(tmp_path).read_bytes() == PAYLOAD


@pytest.mark.parametrize("check, expected", [
    ({"size": len(PAYLOAD) + 1}, f"size {len(PAYLOAD)} bytes, expected {len(PAYLOAD) + 1}"),
    ({"sha256": "0" * 64}, f"sha256 {SHA}, expected {'0' * 64}"),
    ({"approx_size": 10_000_000}, "expected about 10000000"),
])
def test_verification_failure_deletes_the_part(server, tmp_path, check, expected):
    with pytest.raises(VerificationError) as err:
        weights.ensure_files(entry_for(server, **check), tmp_path)
    assert expected in str(err.value) and str(dest_of(tmp_path)) in str(err.value)
    assert not dest_of(tmp_path).exists()
    assert not dest_of(tmp_path).with_name("w.bin.part").exists()


def test_corrupt_present_file_is_fetched_again(server, tmp_path):
    dest_of(tmp_path).parent.mkdir(parents=True)
    dest_of(tmp_path).write_bytes(PAYLOAD[:-1] + b"x")
    entry = entry_for(server, sha256=SHA)
    assert weights.missing_files([entry], tmp_path) == []  # same size: preflight does not hash
    weights.ensure_files(entry, tmp_path)
    assert dest_of(tmp_path).read_bytes() == PAYLOAD and len(server.requests) == 1


@pytest.mark.parametrize("mode, path, expected", [
    ("", "/missing.bin", "HTTPError: 404"), ("html", "/w.bin", "web page")])
def test_http_errors_become_missing_weights(server, tmp_path, mode, path, expected):
    server.mode = mode
    with pytest.raises(MissingWeightsError, match=expected) as err:
        weights.ensure_files(entry_for(server, path=path), tmp_path)
    assert server.url + path in str(err.value)
    assert list(tmp_path.rglob("*.bin")) == []


def test_preflight_lists_missing_files_without_network(server, tmp_path):
    entries = [entry_for(server), registry.load_entry("vqgan", "generated_vqgan_f16_tiny", CONF),
               DEAD]
    problems = weights.missing_files(entries, tmp_path)
    assert len(problems) == 3 and server.requests == []
    assert problems[0] == (f"clip local: w.bin missing at {dest_of(tmp_path)} "
                           f"(download {server.url}/w.bin)")
    assert all("host dead" in p for p in problems[1:])


def test_a_failed_url_falls_back_to_its_mirrors(server, tmp_path):
    f = RemoteFile(name="w.bin", url=server.url + "/missing.bin", size=len(PAYLOAD),
                   mirrors=(server.url + "/gone.bin", server.url + "/w.bin"))
    entry = entry_for(server).model_copy(update={"files": (f,)})
    got = weights.ensure_files(entry, tmp_path)
    assert got["w.bin"].read_bytes() == PAYLOAD
    assert [r[0] for r in server.requests] == ["/missing.bin", "/gone.bin", "/w.bin"]


def test_an_optional_file_that_fails_is_left_out(server, tmp_path):
    extra = RemoteFile(name="model.yaml", url=server.url + "/missing.bin", optional=True)
    entry = entry_for(server)
    entry = entry.model_copy(update={"files": (extra, *entry.files)})
    got = weights.ensure_files(entry, tmp_path)
    assert sorted(got) == ["w.bin"]
    assert weights.missing_files([entry], tmp_path) == []  # not a problem for make doctor


# --- generated models ------------------------------------------------------------------------

def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_generated_vqgan_is_deterministic_idempotent_and_atomic(tmp_path):
    entry = registry.load_entry("vqgan", "generated_vqgan_f16_tiny", CONF)
    a = weights.materialise_generated(entry, tmp_path / "a")
    b = weights.materialise_generated(entry, tmp_path / "b")
    assert a == tmp_path / "a" / "vqgan" / "generated_vqgan_f16_tiny"
    assert sorted(digest(a)) == ["generated.json", "last.ckpt", "model.yaml"]
    assert digest(a) == digest(b)
    stamp = (a / "last.ckpt").stat().st_mtime_ns
    assert weights.materialise_generated(entry, tmp_path / "a") == a
    assert (a / "last.ckpt").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in a.parent.iterdir() if not p.name.endswith(".lock")] == [a.name]
    manifest = json.loads((a / "generated.json").read_text())
    assert manifest["files"]["last.ckpt"] == (a / "last.ckpt").stat().st_size
    other = entry.model_copy(update={"seed": 7})
    assert weights.materialise_generated(other, tmp_path / "a") == a
    assert digest(a)["last.ckpt"] != digest(b)["last.ckpt"]  # new seed: rebuilt in place
    (a / "last.ckpt").write_bytes(b"half")  # damaged: rebuilt
    weights.materialise_generated(other, tmp_path / "a")
    assert (a / "last.ckpt").stat().st_size == manifest["files"]["last.ckpt"]


def test_generated_clip_is_deterministic(tmp_path):
    entry = registry.load_entry("clip", "generated_clip_tiny", CONF)
    a = weights.materialise_generated(entry, tmp_path / "a")
    b = weights.materialise_generated(entry, tmp_path / "b")
    assert sorted(digest(a)) == ["generated.json", "open_clip_config.json",
                                 "open_clip_model.safetensors"]
    assert digest(a) == digest(b)
    config = json.loads((a / "open_clip_config.json").read_text())
    assert config["model_cfg"]["text_cfg"]["vocab_size"] == 49408
    assert weights.ensure_files(entry, tmp_path / "a") == {
        "open_clip_config.json": a / "open_clip_config.json",
        "open_clip_model.safetensors": a / "open_clip_model.safetensors"}


@pytest.mark.parametrize("kind", ["musicgen", "cyclegan"])
def test_other_kinds_dispatch_lazily_by_module_name(tmp_path, monkeypatch, kind):
    calls = []

    def build_generated(entry, out_dir):
        calls.append((entry.name, out_dir.name.startswith(".")))
        (out_dir / "weights.bin").write_bytes(b"w" * 10)

    name = registry.KINDS[kind].format  # the kind's format module, imported on first use
    module = types.ModuleType(name)
    module.build_generated = build_generated
    monkeypatch.setitem(sys.modules, name, module)
    entry = ModelEntry(name=f"tiny_{kind}", kind=kind, source="generated", arch={"x": 1}, seed=3)
    out = weights.materialise_generated(entry, tmp_path)
    assert out == tmp_path / kind / f"tiny_{kind}" and (out / "weights.bin").stat().st_size == 10
    assert calls == [(f"tiny_{kind}", True)]  # built in a hidden work dir, then renamed
    weights.materialise_generated(entry, tmp_path)
    assert len(calls) == 1


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def build_generated(entry, out_dir):
        (out_dir / "half.bin").write_bytes(b"x")
        raise RuntimeError("out of memory")

    module = types.ModuleType("engines.models.cyclegan")
    module.build_generated = build_generated
    monkeypatch.setitem(sys.modules, "engines.models.cyclegan", module)
    entry = ModelEntry(name="broken", kind="cyclegan", source="generated", arch={"x": 1})
    with pytest.raises(RuntimeError):
        weights.materialise_generated(entry, tmp_path)
    assert [p.name for p in (tmp_path / "cyclegan").iterdir() if not p.name.endswith(".lock")] == []


def test_materialise_refuses_downloaded_entries(tmp_path):
    with pytest.raises(ConfigError, match="generated"):
        weights.materialise_generated(registry.load_entry("clip", "vit_b_32_openai", CONF),
                                      tmp_path)
    assert not os.listdir(tmp_path)


# --- make doctor's URL checks ------------------------------------------------------------------

def test_doctor_checks_every_model_url_and_size(server):
    from flows.doctor import check_urls

    ok = entry_for(server)  # /w.bin, no size recorded
    sized = ok.model_copy(update={"name": "sized", "files": (RemoteFile(
        name="w.bin", url=server.url + "/w.bin", approx_size=len(PAYLOAD) * 2),)})
    gone = ok.model_copy(update={"name": "gone", "files": (RemoteFile(
        name="w.bin", url=server.url + "/missing.bin", mirrors=(server.url + "/w.bin",)),)})
    dead = ok.model_copy(update={"name": "dead", "files": (RemoteFile(
        name="w.bin", url=server.url + "/missing.bin"),)})
    checks = check_urls([ok, sized, gone, dead, registry.load_entry(
        "vqgan", "generated_vqgan_f16_tiny", CONF)])
    assert [c.ok for c in checks] == [True, False, True, False]
    assert checks[0].line == f"url local/w.bin: {server.url}/w.bin answers, {len(PAYLOAD)} bytes"
    assert "expects about" in checks[1].line
    assert "(mirror)" in checks[2].line
    assert "HTTP 404" in checks[3].line and "choose another" in checks[3].fix
    assert all(r[0].startswith("HEAD ") for r in server.requests)  # nothing downloaded
    server.mode = "no_head"  # a host that refuses HEAD: a one-byte ranged GET tells the size
    assert check_urls([ok])[0].line.endswith(f"{len(PAYLOAD)} bytes")


def test_doctor_url_checks_are_skipped_offline():
    from flows.doctor import check_urls

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = ModelEntry(name="x", kind="clip", source="url", files=(RemoteFile(
        name="w.bin", url=f"http://127.0.0.1:{port}/w.bin"),), arch={"model": "m", "pretrained": "p"})
    (check,) = check_urls([entry])
    assert check.ok and "offline, checks skipped" in check.line
