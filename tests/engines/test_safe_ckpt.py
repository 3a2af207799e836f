"""engines/models/safe_ckpt.py: malicious checkpoints are refused and their payload never runs; a
Lightning-like checkpoint with non-tensor extras converts to exactly its state_dict."""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engines.core.errors import UnsafeCheckpointError
from engines.models import safe_ckpt
from engines.models.safe_ckpt import (
    BadCheckpointError,
    cached_safetensors,
    convert_ckpt,
    is_dangerous,
)


def write_marker(path: str) -> None:
    """What a payload would do if it ran: create a file."""
    Path(path).write_text("ran")


class Payload:
    """Pickles as a call of `fn(*args)`: runs on any unrestricted unpickling."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def weights() -> OrderedDict:
    g = torch.Generator().manual_seed(0)
    sd = OrderedDict([("encoder.conv.weight", torch.randn(4, 3, 3, 3, generator=g)),
                      ("encoder.conv.bias", torch.randn(4, generator=g)),
                      ("quantize.embedding.weight", torch.randn(16, 4, generator=g)),
                      ("steps", torch.tensor(7))])
    sd._metadata = OrderedDict([("", {"version": 1})])  # as nn.Module.state_dict() has
    return sd


def lightning_ckpt() -> dict:
    from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint

    sd = weights()
    return {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.0.8",
            "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.25),
                                            "best_model_path": "/logs/last.ckpt"}},
            "optimizer_states": [{"state": {0: {"step": 10, "exp_avg": torch.zeros(4)}},
                                  "param_groups": [{"lr": 4.5e-6, "betas": (0.5, 0.9),
                                                    "params": [0, 1]}]}],
            "lr_schedulers": [], "hparams": argparse.Namespace(lr=0.1, name="vq"),
            "monitor_value": np.float64(0.125), "state_dict": sd}


def binunicode(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def raw_pickle(module: str, name: str, arg: str, nested: bool = True) -> bytes:
    """Protocol-2 bytes of {'state_dict': {'w': module.name(arg)}} (or the call at top level)."""
    call = b"c" + f"{module}\n{name}\n".encode() + binunicode(arg) + b"\x85R"
    if nested:
        return (b"\x80\x02}" + binunicode("state_dict") + b"}" + binunicode("w") + call
                + b"ss.")
    return b"\x80\x02}" + binunicode("x") + call + b"s."


def with_pickle(template: Path, out: Path, data_pkl: bytes) -> Path:
    """A copy of a torch.save zip whose data.pkl is replaced by `data_pkl`."""
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = data_pkl if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info.filename, data)
    return out


@pytest.fixture()
def template(tmp_path: Path) -> Path:
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": {}}, path)
    return path


def assert_refused(path: Path, marker: Path, *names: str) -> None:
    with pytest.raises(UnsafeCheckpointError) as err:
        convert_ckpt(path, path.with_suffix(".safetensors"))
    for name in names:
        assert name in str(err.value)
    assert "Nothing from it was run" in str(err.value) or "refused" in str(err.value)
    assert not marker.exists(), "the payload ran"
    assert not path.with_suffix(".safetensors").exists()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_lightning_checkpoint_with_extras_converts_to_its_state_dict(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    torch.save(lightning_ckpt(), ckpt)
    out = tmp_path / "last.safetensors"
    info = convert_ckpt(ckpt, out)
    got, want = load_file(str(out)), weights()
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert info["tensors"] == 4 and info["size"] == out.stat().st_size
    ignored = " ".join(info["ignored"])
    for name in ("ModelCheckpoint", "argparse.Namespace", "numpy.dtype", "scalar"):
        assert name in ignored


def test_pickled_callable_of_unknown_module_is_ignored_never_called(tmp_path):
    marker = tmp_path / "ran.txt"
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": weights(), "extra": Payload(write_marker, str(marker))}, ckpt)
    info = convert_ckpt(ckpt, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert any(n.endswith(".write_marker") for n in info["ignored"])
    assert sorted(load_file(str(tmp_path / "out.safetensors"))) == sorted(weights())


@pytest.mark.parametrize("fn, args, names", [
    (os.system, ("touch {m}",), ["posix.system"]),
    (eval, ("open({m!r}, 'w')",), ["builtins.eval"]),
    (exec, ("open({m!r}, 'w')",), ["builtins.exec"]),
    (subprocess.Popen, (["touch", "{m}"],), ["Popen"]),  # written as py2 commands.Popen
    (getattr, (str, "upper"), ["builtins.getattr"]),
])
def test_code_execution_via_reduce_is_refused(tmp_path, fn, args, names):
    marker = tmp_path / "ran.txt"
    args = tuple(a.format(m=str(marker)) if isinstance(a, str) else
                 [x.format(m=str(marker)) for x in a] if isinstance(a, list) else a for a in args)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": weights(), "cb": Payload(fn, *args)}, ckpt)
    assert_refused(ckpt, marker, *names)


def test_functools_partial_trick_is_refused(tmp_path):
    import functools

    marker = tmp_path / "ran.txt"
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": weights(),
                "cb": Payload(functools.partial(os.system, f"touch {marker}"))}, ckpt)
    assert_refused(ckpt, marker, "functools.partial")


def test_payload_nested_inside_the_state_dict_is_refused(tmp_path):
    marker = tmp_path / "ran.txt"
    sd = weights()
    sd["decoder.evil"] = Payload(os.system, f"touch {marker}")
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": sd}, ckpt)
    assert_refused(ckpt, marker, "posix.system")


@pytest.mark.parametrize("module, name", [("posix", "system"), ("os", "system"),
                                          ("builtins", "eval"), ("nt", "system")])
def test_handcrafted_global_is_refused(tmp_path, template, module, name):
    marker = tmp_path / "ran.txt"
    arg = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w')"
    ckpt = with_pickle(template, tmp_path / "last.ckpt", raw_pickle(module, name, arg))
    assert_refused(ckpt, marker, f"{module}.{name}")


def test_handcrafted_payload_is_live_with_plain_pickle(tmp_path):
    """The raw pickles above really execute under an unrestricted unpickler (so the refusals
    are meaningful): checked in a child process."""
    marker = tmp_path / "ran.txt"
    data = raw_pickle("posix", "system", f"touch {marker}", nested=False)
    subprocess.run([sys.executable, "-c", "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"],
                   input=data, check=True, timeout=60)
    assert marker.exists()


def test_protocol_4_pickle_is_refused(tmp_path):
    marker = tmp_path / "ran.txt"
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": weights(), "cb": Payload(os.system, f"touch {marker}")}, ckpt,
               pickle_protocol=4)
    assert_refused(ckpt, marker)


def test_legacy_format_loads_plain_weights_and_refuses_payloads(tmp_path):
    ok = tmp_path / "ok.ckpt"
    torch.save({"state_dict": weights()}, ok, _use_new_zipfile_serialization=False)
    convert_ckpt(ok, tmp_path / "ok.safetensors")
    assert sorted(load_file(str(tmp_path / "ok.safetensors"))) == sorted(weights())
    marker = tmp_path / "ran.txt"
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": weights(), "cb": Payload(write_marker, str(marker))}, bad,
               _use_new_zipfile_serialization=False)
    assert_refused(bad, marker)


def test_placeholder_inside_state_dict_is_refused(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    sd = weights()
    sd["extra"] = argparse.Namespace(a=1)
    torch.save({"state_dict": sd}, ckpt)
    with pytest.raises(UnsafeCheckpointError, match="not a tensor"):
        convert_ckpt(ckpt, tmp_path / "o.safetensors")


def test_not_a_checkpoint(tmp_path):
    yaml_file = tmp_path / "last.ckpt"
    yaml_file.write_text("model:\n  target: taming.models.vqgan.VQModel\n")
    with pytest.raises(BadCheckpointError, match="not a torch checkpoint"):
        convert_ckpt(yaml_file, tmp_path / "o.safetensors")
    empty = tmp_path / "empty.ckpt"
    torch.save({"epoch": 1}, empty)
    with pytest.raises(BadCheckpointError, match="no state_dict"):
        convert_ckpt(empty, tmp_path / "o.safetensors")


def test_cached_conversion_once_then_again_when_the_ckpt_changes(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    torch.save(lightning_ckpt(), ckpt)
    out = cached_safetensors(ckpt)
    assert out == tmp_path / "last.safetensors"
    meta = json.loads((tmp_path / "last.safetensors.json").read_text())
    assert meta["source_size"] == ckpt.stat().st_size and meta["tensors"] == 4
    first = out.stat().st_mtime_ns
    assert cached_safetensors(ckpt).stat().st_mtime_ns == first  # not converted again
    sd = weights()
    sd["new"] = torch.ones(2)
    torch.save({"state_dict": sd}, ckpt)
    assert sorted(load_file(str(cached_safetensors(ckpt)))) == sorted(sd)
    out.write_bytes(out.read_bytes()[:100])  # truncated output: converted again
    assert sorted(load_file(str(cached_safetensors(ckpt)))) == sorted(sd)


def test_prefix_keeps_and_strips_a_sub_model(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    sd = {f"first_stage_model.{k}": v for k, v in weights().items()}
    sd["transformer.w"] = torch.zeros(3)
    torch.save({"state_dict": sd}, ckpt)
    out = cached_safetensors(ckpt, prefix="first_stage_model.")
    assert out.name == "last.first_stage_model.safetensors"
    assert sorted(load_file(str(out))) == sorted(weights())
    with pytest.raises(BadCheckpointError, match="no tensors under prefix"):
        convert_ckpt(ckpt, tmp_path / "x.safetensors", prefix="cond_stage_model.")


def test_shared_storage_is_written(tmp_path):
    base = torch.arange(8.0)
    ckpt = tmp_path / "tied.ckpt"
    torch.save({"a": base, "b": base, "c": base[2:4]}, ckpt)
    got = load_file(str(cached_safetensors(ckpt)))
    assert torch.equal(got["a"], base) and torch.equal(got["b"], base)
    assert torch.equal(got["c"], torch.tensor([2.0, 3.0]))


@pytest.mark.parametrize("name, bad", [
    ("posix.system", True), ("os.system", True), ("builtins.eval", True),
    ("builtins.getattr", True), ("subprocess.Popen", True), ("functools.partial", True),
    ("operator.attrgetter", True), ("torch.load", True), ("torch.hub.load", True),
    ("numpy.load", True), ("importlib.import_module", True), ("copyreg._reconstructor", False),
    ("builtins.object", False), ("argparse.Namespace", False),
    ("numpy.core.multiarray.scalar", False), ("numpy.dtype", False),
    ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint", False),
])
def test_is_dangerous(name, bad):
    assert is_dangerous(name) is bad


def test_placeholder_is_inert():
    [(cls, full)] = safe_ckpt._placeholders(["some.module.Thing"])
    obj = cls(1, x=2)
    obj.__setstate__({"a": 1})
    assert full == "some.module.Thing" and not vars(obj) and "ignored" in repr(obj)
    assert pickle.dumps(1) and io.BytesIO  # keep imports honest
