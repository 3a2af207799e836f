"""Input images given as URLs (an init image or an image prompt, as the notebooks accept):
fetched once into `<cache_dir>/inputs/` and kept by content.

- `is_url(text)`: http:// or https://.
- `fetch_input(url, cache_dir, key)`: the local file of `url`. The first call downloads it (at
  most MAX_BYTES, `requests`, redirects followed), checks that it decodes as an image, and writes
  it atomically as `<sha256 of its bytes>.<format>`, then records the URL in
  `inputs/urls/<sha256 of the URL>.json`. Later calls find that record and the file (its hash
  checked) and never touch the network, offline too. A failure is a ConfigError naming `key`,
  the URL, and what to do (download it and give the path).

Artefact keys hash the file's content (like any input file), so a URL whose content changes on
the server re-renders only if it is fetched again: delete its record to fetch it again.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from engines.core.errors import ConfigError
from engines.core.files import sha256_file, write_bytes, write_json

MAX_BYTES = 64 * 2**20  # an input image larger than this is refused
TIMEOUT_S = (10.0, 60.0)  # connect, read (seconds)
ACCEPTED = "an image URL that answers (http or https), or the path of an image file"


def is_url(text: object) -> bool:
    return isinstance(text, str) and text.strip().lower().startswith(("http://", "https://"))


def _record(cache_dir: Path, url: str) -> Path:
    return Path(cache_dir) / "inputs" / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()}.json"


def cached_input(url: str, cache_dir: Path | str) -> Path | None:
    """The local file of a URL fetched before (its content hash checked), or None."""
    try:
        rec = json.loads(_record(Path(cache_dir), url).read_text())
        path = Path(cache_dir) / "inputs" / rec["file"]
        if path.is_file() and sha256_file(path) == rec["sha256"]:
            return path
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def fetch_input(url: str, cache_dir: Path | str, key: str) -> Path:
    """The local copy of an image URL, fetched once (module docstring)."""
    url = url.strip()
    found = cached_input(url, cache_dir)
    if found is not None:
        return found
    import requests
    from PIL import Image

    try:
        with requests.get(url, stream=True, timeout=TIMEOUT_S, allow_redirects=True) as resp:
            resp.raise_for_status()
            data = bytearray()
            for block in resp.iter_content(chunk_size=1 << 16):
                data += block
                if len(data) > MAX_BYTES:
                    raise ConfigError(key, url, ACCEPTED, f"larger than {MAX_BYTES >> 20} MB")
    except requests.RequestException as exc:
        why = " ".join(str(exc).split())[:200]
        raise ConfigError(key, url, ACCEPTED, f"cannot fetch it ({type(exc).__name__}: {why}); "
                          "offline, download it elsewhere and give its path") from None
    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            fmt = (im.format or "png").lower()
            im.verify()
    except Exception as exc:  # noqa: BLE001 - whatever the decoder says, it is not an image
        raise ConfigError(key, url, ACCEPTED, f"what it serves is not an image ({exc})") from None
    digest = hashlib.sha256(bytes(data)).hexdigest()
    suffix = {"jpeg": "jpg", "tiff": "tif"}.get(fmt, fmt)
    path = Path(cache_dir) / "inputs" / f"{digest}.{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or sha256_file(path) != digest:
        write_bytes(path, bytes(data))
    record = _record(Path(cache_dir), url)
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, {"url": url, "sha256": digest, "file": path.name})
    return path
