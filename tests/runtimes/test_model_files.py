"""optkit.runtimes.model_files: round trips, safe loading, atomic writes, sizes."""
from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
from torch import nn

from optkit.runtimes import model_files
from optkit.core.errors import OptkitError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- atomic writes

def test_check_destination_refuses_existing_files_and_missing_folders(tmp_path):
    from optkit.core.errors import check_destination

    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"user's model")
    with pytest.raises(OptkitError, match=r"engine_path=.*already exists.*overwrite=True"):
        check_destination(existing, parameter="engine_path")
    assert check_destination(existing, overwrite=True) == existing
    with pytest.raises(OptkitError, match="does not exist.*mkdir"):
        check_destination(tmp_path / "no_such_folder" / "m.onnx", overwrite=True)
    assert check_destination(str(tmp_path / "new.onnx")) == tmp_path / "new.onnx"
    assert existing.read_bytes() == b"user's model"  # checking never touches the file


def test_atomic_write_moves_the_file_into_place(tmp_path):
    target = tmp_path / "out.bin"
    with model_files.atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"hello")
        assert not target.exists()
    assert target.read_bytes() == b"hello" and _leftovers(tmp_path) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with model_files.atomic_write(target, overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_overwrite_is_refused_by_default(tmp_path):
    path = model_files.save_state_dict(_net(), tmp_path / "m.pt")
    before = path.read_bytes()
    with pytest.raises(OptkitError, match="overwrite=True"):
        model_files.save_state_dict(nn.Linear(2, 2), path)
    assert path.read_bytes() == before
    model_files.save_state_dict(nn.Linear(2, 2), path, overwrite=True)
    assert set(model_files.load_state_dict(path)) == {"weight", "bias"}


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(OptkitError, match="does not exist"):
        model_files.save_state_dict(_net(), tmp_path / "no" / "m.pt")


# --------------------------------------------------------------------------- state dicts and pickles

def test_state_dict_round_trip(tmp_path):
    net = _net()
    path = model_files.save_state_dict(net, tmp_path / "m.pt")
    state = model_files.load_model(path)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    fresh = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    assert model_files.load_model(path, model=fresh) is fresh
    x = torch.rand(4, 6)
    assert torch.equal(fresh(x), net(x))
    with pytest.raises(OptkitError, match="does not match"):
        model_files.load_state_dict(path, nn.Linear(6, 3))


def test_equal_weights_give_identical_files(tmp_path):
    net = _net()
    a = model_files.save_state_dict(net, tmp_path / "a.pt")
    b = model_files.save_state_dict(net.state_dict(), tmp_path / "b.pt")
    assert a.read_bytes() == b.read_bytes()


def test_pickled_module_is_refused_without_opt_in(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_net(), path)
    with pytest.raises(OptkitError) as err:
        model_files.load_model(path)
    assert "allow_pickle=True" in str(err.value) and "runs any code" in str(err.value)
    loaded = model_files.load_model(path, allow_pickle=True)
    assert isinstance(loaded, nn.Sequential)


def test_not_a_pytorch_file_is_refused(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(OptkitError, match="not a PyTorch file"):
        model_files.load_model(path)


# --------------------------------------------------------------------------- torch.export and ONNX

def test_exported_program_round_trip(tmp_path):
    net = _net()
    x = torch.rand(2, 6)
    program = torch.export.export(net, (x,))
    path = model_files.save_program(program, tmp_path / "m.pt2")
    with pytest.raises(OptkitError, match="already exists"):
        model_files.save_program(program, path)
    loaded = model_files.load_model(path)
    assert torch.allclose(loaded.module()(x), net(x))
    with pytest.raises(OptkitError, match=".pt2"):
        model_files.save_program(program, tmp_path / "m.pt")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.onnx's own pytree deprecation notice
def test_onnx_export_loads_checked_and_counts_external_data(tmp_path):
    onnx = pytest.importorskip("onnx")
    net = _net()
    path = tmp_path / "m.onnx"
    torch.onnx.export(net, (torch.rand(2, 6),), str(path), dynamo=True, external_data=True)
    proto = model_files.load_model(path)
    assert isinstance(proto, onnx.ModelProto) and len(proto.graph.node) > 0
    on_disk = sum(p.stat().st_size for p in tmp_path.iterdir() if p.name.startswith("m.onnx"))
    assert model_files.file_size(path) == on_disk
    assert model_files.file_size(path, include_external_data=False) == path.stat().st_size
    copy = model_files.save_onnx(proto, tmp_path / "copy.onnx")
    assert model_files.load_onnx(copy).graph.node[0].op_type == proto.graph.node[0].op_type


def test_not_onnx_and_invalid_onnx_are_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(OptkitError, match="ONNX"):
        model_files.load_model(junk)
    # a well-formed protobuf whose graph uses an undefined input: the checker rejects it
    node = helper.make_node("Relu", ["missing"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(OptkitError, match="onnx.checker"):
        model_files.load_onnx(bad)
    assert model_files.load_onnx(bad, check=False).graph.node[0].op_type == "Relu"


# --------------------------------------------------------------------------- dispatch

def test_unknown_suffix_lists_formats_and_tf_formats_point_to_optkit_tf(tmp_path):
    odd = tmp_path / "model.txt"
    odd.write_bytes(b"x")
    with pytest.raises(OptkitError) as err:
        model_files.load_model(odd)
    assert ".pt2" in str(err.value) and ".onnx" in str(err.value) and ".tflite" in str(err.value)
    # one registry (optkit.runtimes.formats): a .bin is a PyTorch file here as in the capstone, read safely
    binary = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(2)}, binary)
    assert torch.equal(model_files.load_model(binary)["w"], torch.ones(2))
    keras = tmp_path / "model.keras"
    keras.write_bytes(b"x")
    with pytest.raises(OptkitError, match="optkit.runtimes.tflow"):
        model_files.load_model(keras)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"x")
    with pytest.raises(OptkitError, match="SavedModel"):
        model_files.load_model(saved)


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(OptkitError, match="no such file"):
        model_files.load_model(tmp_path / "nothing.pt")


# --------------------------------------------------------------------------- sizes

def test_file_size_of_a_folder_is_the_sum(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 32)
    assert model_files.file_size(tmp_path) == 42 and model_files.file_size(tmp_path / "a") == 10


def test_gzip_size_sees_zeros(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal(10_000).astype(np.float32)
    sparse = dense.copy()
    sparse[rng.random(10_000) < 0.9] = 0.0
    assert model_files.gzip_size(sparse.tobytes()) < 0.4 * model_files.gzip_size(dense.tobytes())
    path = tmp_path / "w.bin"
    path.write_bytes(dense.tobytes())
    assert model_files.gzip_size(path) == len(gzip.compress(dense.tobytes(), compresslevel=9))


def test_model_size_is_about_four_bytes_per_parameter():
    net = nn.Linear(1000, 100)
    size = model_files.model_size(net)
    assert 4 * 100_100 < size < 4 * 100_100 + 4096
    assert model_files.model_size(net.state_dict()) == size


def test_sha256_of_known_bytes(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    assert model_files.sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert os.path.getsize(path) == model_files.file_size(path)
