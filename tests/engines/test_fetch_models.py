"""`make fetch-models conf=<preset>` downloads a hub model's files, and only the ones its registry
entry lists (`allow_patterns`), through huggingface_hub, at the pinned revision: against a local
server that answers the two Hub endpoints snapshot_download uses (the repo tree at a revision,
`/api/models/<repo>/tree/<revision>`, and each file's `/<repo>/resolve/<revision>/<path>`),
pointed at by HF_ENDPOINT. No real network: the repo holds small files under the real names of
Wan-AI/Wan2.1-T2V-1.3B-Diffusers plus files the entry must not fetch (pickled weights, a README,
a video)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

from tests.helpers import ROOT

REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


def repo_files() -> dict[str, bytes]:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save

    def st() -> bytes:
        return save({"weight": torch.zeros(4, 4)})

    wanted = {"model_index.json": json.dumps({"_class_name": "WanPipeline"}).encode(),
              "scheduler/scheduler_config.json": b'{"_class_name": "UniPCMultistepScheduler"}',
              "tokenizer/tokenizer_config.json": b"{}",
              "tokenizer/spiece.model": b"sentencepiece",
              "text_encoder/config.json": b"{}",
              "text_encoder/model.safetensors": st(),
              "transformer/config.json": b"{}",
              "transformer/diffusion_pytorch_model.safetensors": st(),
              "vae/config.json": b"{}",
              "vae/diffusion_pytorch_model.safetensors": st()}
    unwanted = {"README.md": b"# Wan\n", "assets/demo.mp4": b"\0" * 4096,
                "transformer/diffusion_pytorch_model.bin": b"\x80\x02}q\x00.",
                "text_encoder/pytorch_model.bin": b"\x80\x02}q\x00.",
                "examples/i2v_input.JPG": b"\xff\xd8\xff"}
    return {**wanted, **unwanted}


class Hub(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    revision = ""
    served: list[str] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str], head: bool = False) -> None:
        self.send_response(code)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        tree = f"/api/models/{REPO}/tree/{self.revision}"
        resolve = f"/{REPO}/resolve/{self.revision}/"
        if path.rstrip("/") == tree:
            listing = [{"type": "file", "path": p, "size": len(b),
                        "oid": hashlib.sha1(b).hexdigest(),
                        **({"lfs": {"oid": hashlib.sha256(b).hexdigest(), "size": len(b),
                                    "pointerSize": 130}} if p.endswith(".safetensors") else {})}
                       for p, b in self.files.items()]
            return self._send(200, json.dumps(listing).encode(),
                              {"Content-Type": "application/json"}, head)
        if path.startswith(resolve) and path[len(resolve):] in self.files:
            name = path[len(resolve):]
            body = self.files[name]
            if not head:
                self.served.append(name)
            etag = (hashlib.sha256(body) if name.endswith(".safetensors")
                    else hashlib.sha1(body)).hexdigest()
            return self._send(200, body, {"X-Repo-Commit": self.revision, "ETag": f'"{etag}"',
                                          "Content-Type": "application/octet-stream"}, head)
        self._send(404, b'{"error": "not found"}', {"Content-Type": "application/json",
                                                     "X-Error-Code": "EntryNotFound"}, head)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)


@pytest.fixture
def hub():
    from engines.models.registry import load_entry

    entry = load_entry("diffusers", "wan2_1_t2v_1_3b", ROOT / "conf")
    assert entry.repo == REPO
    Hub.files, Hub.revision, Hub.served = repo_files(), entry.revision, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield entry, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_make_fetch_models_downloads_only_the_registry_files(hub, tmp_path):
    import fnmatch

    entry, endpoint = hub
    models = tmp_path / "models"
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_XET": "1", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy",
              "HF_HUB_OFFLINE"):
        env.pop(k, None)
    proc = subprocess.run(["make", "fetch-models", "conf=wan_garden",
                           f"args=soundtrack=none runtime.models_dir={models}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folder = models / "diffusers" / entry.name
    assert f"{entry.name} -> {folder}" in proc.stdout
    got = {p.relative_to(folder).as_posix() for p in folder.rglob("*")
           if p.is_file() and not p.relative_to(folder).as_posix().startswith(".")}
    allowed = {n for n in Hub.files if any(fnmatch.fnmatch(n, pat)
                                           for pat in entry.allow_patterns)}
    assert got == allowed and sorted(Hub.served) == sorted(allowed)
    assert not any(n.endswith((".bin", ".mp4", ".md", ".JPG")) for n in got)
    for name in got:
        assert (folder / name).read_bytes() == Hub.files[name]
    from engines.models.weights import HUB_MARKER

    marker = json.loads((folder / HUB_MARKER).read_text())
    assert (marker["repo"], marker["revision"]) == (REPO, entry.revision)
    # a second run finds the files and asks the server for nothing
    Hub.served.clear()
    again = subprocess.run(["make", "fetch-models", "conf=wan_garden",
                            f"args=soundtrack=none runtime.models_dir={models}"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and Hub.served == [], again.stderr[-2000:]
