"""Hostile input, the parts tests/engines/test_safe_ckpt.py, test_expr.py and
tests/reliability/test_hostile_overrides.py leave open:

- checkpoints that hide code where tensors are rebuilt (the storage reference of a tensor, the
  arguments of torch's own `_rebuild_tensor_v2`), torch internals that would unpickle bytes or
  import a name, and a pickle that calls what an earlier call returned: refused, never run;
- a prompt full of ffmpeg filter-graph metacharacters and `%{...}` expansions renders through
  the smoke DAG, and no ffmpeg command carries it except as `-metadata` values of the export,
  which come back verbatim from the container;
- the schedule evaluator on the nastiest inputs within its limits (huge powers, overflow, deep
  nesting, the longest schedules): a ConfigError or a finite value, in bounded CPU time and
  memory.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from engines.core.errors import ConfigError, UnsafeCheckpointError
from tests.helpers import read_run
from tests.reliability.conftest import SMOKE, Reference, run_patched


# ------------------------------------------------------------------ pickled code
class Payload:
    """Pickles as the call `fn(*args)`."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class StorageRef:
    """Pickled as a persistent id (how torch.save refers to a tensor's storage bytes)."""

    def __init__(self, storage_type):
        self.storage_type = storage_type


class Rebuilt:
    """Pickles as torch's own `torch._utils._rebuild_tensor_v2(storage, 0, (4,), (1,), ...)`."""

    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        import torch

        return torch._utils._rebuild_tensor_v2, (self.storage, 0, (4,), (1,), False,
                                                 collections.OrderedDict())


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", obj.storage_type, "0", "cpu", 4)
        return None


def checkpoint(tmp_path: Path, data_pkl: bytes) -> Path:
    """A torch.save zip (one float storage of 4 elements) whose data.pkl is `data_pkl`."""
    import torch

    template = tmp_path / "template.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4.0)}}, template)
    out = tmp_path / "last.ckpt"
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            name = info.filename
            dst.writestr(name, data_pkl if name.endswith("/data.pkl") else src.read(info))
    return out


def dumps(obj) -> bytes:
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def binunicode(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def call_of_a_call(module: str, name: str, arg1: str, arg2: str) -> bytes:
    """{'cb': module.name(arg1)(arg2)}: REDUCE on what an earlier REDUCE returned."""
    first = b"c" + f"{module}\n{name}\n".encode() + binunicode(arg1) + b"\x85R"
    return b"\x80\x02}" + binunicode("cb") + first + binunicode(arg2) + b"\x85Rs."


def convert(path: Path):
    from engines.models.safe_ckpt import convert_ckpt

    return convert_ckpt(path, path.with_suffix(".safetensors"))


def test_the_handmade_torch_pickle_is_a_real_checkpoint(tmp_path: Path) -> None:
    """The builder below makes loadable checkpoints, so the refusals are about the payloads."""
    import torch

    state = {"w": Rebuilt(StorageRef(torch.FloatStorage))}
    ckpt = checkpoint(tmp_path, dumps({"state_dict": state}))
    assert convert(ckpt)["tensors"] == 1


@pytest.mark.parametrize("trick", ["storage type", "storage", "unpickle bytes in state_dict",
                                   "unpickle bytes beside it", "import by name, then call"])
def test_code_hidden_where_tensors_are_rebuilt_is_refused(tmp_path: Path, trick: str) -> None:
    import torch

    marker = tmp_path / "ran.txt"
    cmd = f"touch {marker}"
    inner = pickle.dumps(Payload(os.system, cmd))  # torch.load(weights_only=False) would run it
    good = Rebuilt(StorageRef(torch.FloatStorage))
    data = {
        "storage type": lambda: dumps({"state_dict": {"w": Rebuilt(StorageRef(
            Payload(os.system, cmd)))}}),
        "storage": lambda: dumps({"state_dict": {"w": Rebuilt(Payload(os.system, cmd))}}),
        "unpickle bytes in state_dict": lambda: dumps({"state_dict": {"w": Payload(
            torch.storage._load_from_bytes, inner)}}),
        "unpickle bytes beside it": lambda: dumps({"state_dict": {"w": good}, "cb": Payload(
            torch.storage._load_from_bytes, inner)}),
        "import by name, then call": lambda: call_of_a_call(
            "torch._utils", "_import_dotted_name", "os.system", cmd),
    }[trick]()
    ckpt = checkpoint(tmp_path, data)
    with pytest.raises(UnsafeCheckpointError) as err:
        convert(ckpt)
    name = {"unpickle bytes in state_dict": "torch.storage._load_from_bytes",
            "unpickle bytes beside it": "torch.storage._load_from_bytes",
            "import by name, then call": "torch._utils._import_dotted_name"}.get(trick,
                                                                              "posix.system")
    assert f"would import or call {name} (code, not data). Nothing from it was run" in str(err.value)
    assert not marker.exists()
    assert not ckpt.with_suffix(".safetensors").exists()


def test_calling_what_an_unknown_callable_returned_is_refused(tmp_path: Path) -> None:
    """An unknown name becomes an inert placeholder; calling its result is not allowed."""
    ckpt = checkpoint(tmp_path, call_of_a_call("some_plugin.factory", "make", "x", "y"))
    with pytest.raises(UnsafeCheckpointError, match="refused by the restricted unpickler"):
        convert(ckpt)


# ------------------------------------------------------------------ prompts and ffmpeg
NASTY = ("it's a [garden]; 50%{pts} %{localtime}, C:\\tmp\\x: drawtext=text='hi':x=0 "
         "[out];\nsecond line,\\ end")
FRAGMENTS = ("[garden]", "%{pts}", "%{localtime}", "drawtext=text=", "second line")
ARGV_LOG = """
import json, engines.media.ffmpeg as ff
_run = ff.run_argv
def run_argv(args, **kw):
    with open({log!r}, "a") as out:
        out.write(json.dumps(args) + "\\n")
    return _run(args, **kw)
ff.run_argv = run_argv
"""


@pytest.fixture(scope="module")
def nasty_render(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("nasty")
    cache = reference.copy_cache(base / "cache")  # only shot 0 and what follows render again
    log = base / "argv.jsonl"
    proc = run_patched(ARGV_LOG.format(log=str(log)), *SMOKE, f'film.shots.0.prompts="{NASTY}"',
                       cache=cache, models=reference.models, run_dir=base / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"record": read_run(base / "run"),
            "argvs": [json.loads(line) for line in log.read_text().splitlines()]}


def test_prompt_text_reaches_ffmpeg_only_as_metadata_values(nasty_render: dict) -> None:
    argvs = nasty_render["argvs"]
    assert len(argvs) >= 5  # shot 0: preview, contact sheet, speed; blend; export; poster
    carrying = [(n, args, i) for n, args in enumerate(argvs) for i, a in enumerate(args)
                if any(f in a for f in FRAGMENTS)]
    assert len({n for n, _, _ in carrying}) == 1  # one command: the export
    prompts = NASTY + " || a garden at noon / a garden at night"
    for _, args, i in carrying:
        assert args[i - 1].startswith("-metadata:g:")
        assert args[i].partition("=")[2] == prompts
    assert sorted(args[i].partition("=")[0] for _, args, i in carrying) == ["comment",
                                                                            "description"]
    filters = [a for args in argvs for j, a in enumerate(args)
               if j and args[j - 1] in ("-filter_complex", "-vf", "-af", "-filter:v")]
    assert filters and not any(f in g for g in filters for f in FRAGMENTS)


def test_prompt_text_comes_back_verbatim_from_the_container(nasty_render: dict) -> None:
    from engines.media.ffmpeg import probe

    record = nasty_render["record"]
    info = probe(Path(record["video"]))
    assert info.metadata["comment"] == NASTY + " || a garden at noon / a garden at night"
    assert info.frames == record["timeline"]["total_frames"]


# ------------------------------------------------------------------ schedule evaluator
MAX = 100_000  # engines.planning.keyframes.MAX_CHARS
SCHEDULES = {
    "tower of powers": "0:(9**9**9**9)",
    "overflow": "0:(1e308*1e308)",
    "overflow at a later t": "0:(1e300*exp(t))",
    "huge integer": "0:(" + "9" * 990 + ")",
    "deep parentheses": "0:(" + "(" * 300 + "t" + ")" * 300 + ")",
    "deep unary minus": "0:(" + "-" * 990 + "t)",
    "deep calls": "0:(" + "sin(" * 200 + "t" + ")" * 200 + ")",
    "exponent chain": "0:(" + "**".join(["1.0001"] * 120) + ")",
    "unbalanced": "0:(" + "(" * (MAX - 10),
    "longest schedule": ", ".join(f"{i}:({i % 7}*sin(t/{i + 1}))" for i in range(5000))[:MAX]
    .rsplit(",", 1)[0],
    "longest constant schedule": ", ".join(f"{i}:(1)" for i in range(30000))[:MAX]
    .rsplit(",", 1)[0],
    "too long": "0:(1)" + " " * MAX,
    "huge key": "9" * 5000 + ":(1)",
    "key beyond float": "1e400:(1)",
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_at_the_limits_cost_bounded_time_and_memory(name: str) -> None:
    """CPU seconds (not wall clock: other jobs share the machine) and traced peak memory."""
    from engines.planning.keyframes import parse_schedule

    text = SCHEDULES[name]
    tracemalloc.start()
    cpu = time.process_time()
    try:
        values = parse_schedule(text, key="motion.zoom", fps=12).values(240)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("motion.zoom")
        assert len(message) < 3 * len(text) + 2000  # quotes the input, does not grow with it
        values = None
    finally:
        used = time.process_time() - cpu
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert used < 20, f"{used:.1f} CPU s"
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"
    if values is not None:
        assert len(values) == 240 and all(isinstance(v, float) for v in values)
        assert all(abs(v) < float("inf") for v in values)
