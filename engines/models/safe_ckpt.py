"""Safe conversion of (PyTorch Lightning) `.ckpt` files to safetensors: no pickled code ever runs.

A checkpoint is untrusted input. Unpickling is done by torch's own restricted unpickler
(`torch.load(weights_only=True)`): it imports and calls nothing outside torch's allowlist of
tensor-rebuilding functions, storage/dtype classes, `collections.OrderedDict`, `_codecs.encode`
(bytes) and a few builtins, and it refuses unsupported opcodes. We chose it over a hand-written
`pickle.Unpickler` because it is maintained and audited upstream. Lightning checkpoints also carry
harmless non-tensor state that the allowlist does not know (callbacks keyed by their class, numpy
scalars, `argparse.Namespace` hyper-parameters...). Before loading, the pickle is disassembled
without executing it (`torch.serialization.get_unsafe_globals_in_checkpoint`) and every global
name it references outside the allowlist is classified:

- code-execution primitives (os/posix/subprocess/builtins.eval/exec/getattr, functools.partial,
  operator tricks, importlib, pickle/marshal, torch.load/hub/jit, anything named load/system/...)
  are refused with `UnsafeCheckpointError` before anything is unpickled;
- every other name becomes an inert placeholder class (registered with torch's `safe_globals` under
  that name): it is never imported, "calling" it (REDUCE/NEWOBJ) makes an empty placeholder
  object, and BUILD on it is ignored. So even an unknown callable that the denylist misses cannot
  run: the denylist only decides between "refuse loudly" and "ignore quietly".

Then the `state_dict` (Lightning) or the dict itself is extracted; every entry must be a tensor
(a placeholder there is refused), and it is written atomically as safetensors. `cached_safetensors`
converts once and keeps `<stem>.safetensors` plus `<stem>.safetensors.json` (source size and mtime,
output size, mtime and sha256: a truncated or altered output is converted again) next to the
checkpoint. Legacy non-zip checkpoints (torch < 1.6) get the strict path only.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from engines.core.errors import PromptreelError, UnsafeCheckpointError
from engines.core.files import fsync_path, sha256_file

CODE_VERSION = "1"  # bump when the converted output for the same checkpoint would change

# Module roots whose globals are refused outright (code execution, I/O, imports, pickling).
DENY_ROOTS = frozenset({
    "os", "posix", "nt", "sys", "subprocess", "_posixsubprocess", "importlib", "runpy",
    "functools", "operator", "pickle", "_pickle", "pickletools", "marshal", "types", "ctypes",
    "_ctypes", "shutil", "socket", "socketserver", "code", "codeop", "pty", "webbrowser",
    "multiprocessing", "signal", "threading", "_thread", "asyncio", "pdb", "bdb", "inspect", "gc",
    "io", "_io", "tempfile", "glob", "zipimport", "pkgutil", "site", "ensurepip", "pip",
    "setuptools", "distutils", "timeit", "trace", "cProfile", "profile", "urllib", "http",
    "ftplib", "smtplib", "telnetlib", "xmlrpc", "requests", "httpx", "aiohttp", "dill",
    "cloudpickle", "joblib", "yaml", "shelve", "dbm", "sqlite3", "platform", "ntpath",
    "posixpath", "commands", "popen2", "exec", "eval",
})
DENY_PREFIXES = ("torch.hub", "torch.jit", "torch.serialization", "torch._C", "torch.utils",
                 "torch.package", "torch.ops", "torch._ops", "torch.distributed",
                 "torch.multiprocessing", "torch._dynamo", "torch.fx", "torch.export",
                 "torch._inductor", "torch.compiler", "torch.library", "torch.cuda",
                 "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.ctypeslib",
                 "numpy.lib.npyio", "pandas.io")
DENY_NAMES = frozenset({
    "system", "popen", "spawn", "spawnl", "spawnv", "execv", "execve", "execl", "fork", "run",
    "call", "check_call", "check_output", "Popen", "eval", "exec", "compile", "open",
    "getattr", "setattr", "delattr", "__import__", "import_module", "apply", "execfile", "input",
    "breakpoint", "load", "loads", "load_module", "read_pickle", "fromfile", "memmap", "remove",
    "unlink", "rmtree", "rmdir", "kill", "globals", "locals", "vars", "partial", "methodcaller",
    "attrgetter", "itemgetter", "reduce", "_reconstruct_from_code", "FunctionType", "CodeType",
    "_load_from_bytes", "_import_dotted_name",  # torch internals: unpickle bytes, import by name
})
SAFE_BUILTINS = frozenset({"object", "int", "float", "str", "bytes", "tuple", "list", "dict",
                           "frozenset", "slice", "range", "bool", "complex", "set", "bytearray"})


class BadCheckpointError(PromptreelError):
    """The file is not a usable checkpoint (not a torch file, no tensors, wrong prefix)."""


class Placeholder:
    """Inert stand-in for an unknown, non-dangerous pickled class or function. Never runs code."""

    _pickled_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<ignored {self._pickled_name}>"


def is_dangerous(full_name: str) -> bool:
    """True if a pickled global name is a code-execution primitive (refused, never unpickled)."""
    module, _, name = full_name.rpartition(".")
    root = module.split(".")[0]
    if root in ("builtins", "__builtin__"):
        return name not in SAFE_BUILTINS
    if root == "copyreg":
        return name != "_reconstructor"
    if root in DENY_ROOTS or name in DENY_NAMES or name.startswith("__"):
        return True
    return any(module == p or module.startswith(p + ".") for p in DENY_PREFIXES)


def scan_globals(path: Path) -> tuple[list[str], list[str]]:
    """(refused, ignored): global names outside torch's allowlist, found by disassembling the
    checkpoint's pickle without running it. Raises UnsafeCheckpointError if it cannot be read."""
    import pickle

    import torch

    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError) as exc:
        raise UnsafeCheckpointError(
            f"{path}: refused: its pickle cannot be checked without running it ({exc}). "
            "Only torch.save checkpoints (protocol 2) are accepted.") from None
    refused = [n for n in names if is_dangerous(n)]
    return refused, [n for n in names if n not in refused]


def _placeholders(names: list[str]) -> list[tuple[type, str]]:
    out = []
    for full in names:
        module, _, name = full.rpartition(".")
        cls = type(name or "Unnamed", (Placeholder,), {"__module__": module or "?",
                                                       "_pickled_name": full})
        out.append((cls, full))
    return out


def _refusal(path: Path, names: list[str]) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{path}: refused: the checkpoint would import or call {', '.join(names)} (code, not "
        "data). Nothing from it was run. Get the file from a trusted source and compare its "
        "sha256; promptreel never unpickles with weights_only=False.")


def read_checkpoint(path: Path) -> tuple[Any, list[str]]:
    """Unpickle `path` safely (see module doc). Returns (object, ignored global names)."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise BadCheckpointError(f"{path}: no such checkpoint file")
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with open(path, "rb") as f:
            head = f.read(16)
        if not head.startswith(b"\x80"):  # a legacy torch file starts with a pickle PROTO opcode
            raise BadCheckpointError(f"{path}: not a torch checkpoint (it starts with {head!r}): "
                                     "a web page or a config saved under the checkpoint's name? "
                                     "Delete it and fetch it again")
    refused, ignored = scan_globals(path) if is_zip else ([], [])
    if refused:
        raise _refusal(path, refused)
    try:
        with torch.serialization.safe_globals(_placeholders(ignored)):
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
            except RuntimeError:
                if not is_zip:
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)  # unaligned zip
    except pickle.UnpicklingError as exc:
        why = " ".join(str(exc).split())[:400]
        raise UnsafeCheckpointError(f"{path}: refused by the restricted unpickler: {why}") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise BadCheckpointError(f"{path}: not a readable torch checkpoint ({exc}); a broken "
                                 "or wrong download? Delete it and fetch it again") from None
    return obj, ignored


def state_dict_of(obj: Any, path: Path, prefix: str = "") -> dict[str, Any]:
    """The tensors of a Lightning checkpoint (`obj['state_dict']`) or of a plain state dict,
    restricted to keys starting with `prefix` (stripped). Non-tensor entries are refused."""
    import torch

    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        sd = obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise BadCheckpointError(f"{path}: no state_dict in this checkpoint (found {keys})")
    out = {}
    for key, value in sd.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UnsafeCheckpointError(f"{path}: state_dict entry {key!r} is {value!r}, not a "
                                        "tensor; refused")
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
    if not out:
        raise BadCheckpointError(f"{path}: no tensors under prefix {prefix!r} "
                                 f"(first keys: {sorted(sd)[:5]})")
    return out


def write_safetensors(tensors: dict[str, Any], out_path: Path, metadata: dict[str, str]) -> None:
    """Write tensors atomically (temp file in the same directory, fsync, os.replace)."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    flat = {}
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel():
            t = t.clone()  # safetensors refuses tensors that share storage
        seen.add(ptr)
        flat[key] = t
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    try:
        save_file(flat, str(tmp), metadata=metadata)
        _sort_metadata(tmp)
        fsync_path(tmp)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(out_path.parent)


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its `__metadata__` keys sorted, in place: safetensors
    writes them in hash-map order, which changes from run to run, so the same checkpoint would
    convert to different bytes. The header keeps its length, so no data offset moves."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        if not isinstance(header.get("__metadata__"), dict):
            return
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > n:  # never expected: keep safetensors' own header
            return
        f.seek(8)
        f.write(text + b" " * (n - len(text)))


def convert_ckpt(ckpt_path: Path, out_path: Path, *, prefix: str = "") -> dict[str, Any]:
    """Convert `ckpt_path` to safetensors at `out_path` without running pickled code.
    `prefix` keeps only keys starting with it (stripped), e.g. "first_stage_model.".
    Returns a summary: tensors written, output bytes, ignored (placeholder) global names."""
    obj, ignored = read_checkpoint(Path(ckpt_path))
    tensors = state_dict_of(obj, Path(ckpt_path), prefix)
    write_safetensors(tensors, Path(out_path), {"format": "pt", "source": Path(ckpt_path).name,
                                                "prefix": prefix})
    return {"tensors": len(tensors), "size": Path(out_path).stat().st_size, "ignored": ignored}


def cached_safetensors(ckpt_path: Path, *, prefix: str = "") -> Path:
    """`<stem>[.<prefix>].safetensors` next to the checkpoint, converted once. Reconverted when
    the checkpoint's size or mtime changes or the output is missing or truncated."""
    from filelock import FileLock

    ckpt = Path(ckpt_path)
    stem = ckpt.stem + (f".{prefix.rstrip('.')}" if prefix else "")
    out = ckpt.with_name(f"{stem}.safetensors")
    meta = ckpt.with_name(f"{stem}.safetensors.json")
    if _cache_valid(ckpt, out, meta, prefix):
        return out
    with FileLock(str(out) + ".lock"):
        if _cache_valid(ckpt, out, meta, prefix):
            return out
        st = ckpt.stat()
        info = convert_ckpt(ckpt, out, prefix=prefix)
        record = {"source": ckpt.name, "source_size": st.st_size,
                  "source_mtime_ns": st.st_mtime_ns, "prefix": prefix,
                  "code_version": CODE_VERSION, **info, "sha256": sha256_file(out),
                  "mtime_ns": out.stat().st_mtime_ns}
        tmp = meta.with_name(f".{meta.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        fsync_path(tmp)
        os.replace(tmp, meta)
    return out


def _cache_valid(ckpt: Path, out: Path, meta: Path, prefix: str) -> bool:
    """The conversion is current: same source, and the output has its recorded size and (when
    its mtime moved since the conversion, e.g. edited in place) its recorded sha256."""
    try:
        record = json.loads(meta.read_text())
        st, got = ckpt.stat(), out.stat()
        return (record["source_size"] == st.st_size and record["source_mtime_ns"] == st.st_mtime_ns
                and record["prefix"] == prefix and record["code_version"] == CODE_VERSION
                and got.st_size == record["size"]
                and (got.st_mtime_ns == record["mtime_ns"] or sha256_file(out) == record["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False
