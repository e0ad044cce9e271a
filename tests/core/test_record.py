"""optkit.core.record: round trips, atomic saving, measurement conversion, frames."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from optkit.core.bench import Measurement
from optkit.core.errors import OptkitError
from optkit.core.record import Record, load_records, save_records, to_frame


def sample_records():
    return [
        Record("fp32", technique="baseline", runtime="torch", latency_ms=4.0, size_bytes=4_000_000,
               accuracy=0.90, params=1_000_000, parity={"max_abs": 0.0}),
        Record("int8", technique="ptq", runtime="onnxruntime", latency_ms=np.float32(2.0),
               size_bytes=np.int64(1_000_000), accuracy=np.float64(0.89),
               extra={"calib": 1000, "shape": (1, 28, 28)}),
    ]


def test_only_name_required():
    r = Record("x")
    assert r.latency_ms is None and r.parity == {} and r.env == {} and r.extra == {}
    with pytest.raises(OptkitError, match="name"):
        Record("")


def test_dict_round_trip():
    r = Record("fp32", batch_size=32, latency_ms=3.2, accuracy=0.91, notes="hi",
               parity={"max_abs": 1e-6}, extra={"k": [1, 2]})
    d = r.to_dict()
    assert set(d) == set(Record.fields())
    assert Record.from_dict(d) == r


def test_from_dict_rejects_unknown_keys_listing_known():
    with pytest.raises(OptkitError) as info:
        Record.from_dict({"name": "x", "latency": 3.0})
    text = str(info.value)
    assert "latency" in text and "latency_ms" in text and "size_bytes" in text


def test_to_dict_converts_numpy_and_non_finite():
    d = sample_records()[1].to_dict()
    assert type(d["latency_ms"]) is float and type(d["size_bytes"]) is int
    assert d["extra"]["shape"] == [1, 28, 28]
    assert Record("n", latency_ms=float("nan")).to_dict()["latency_ms"] is None
    json.dumps(d, allow_nan=False)


def test_from_measurement_fills_timing_fields():
    m = Measurement("eager b8", np.full(10, 0.002), batch_size=8, threads=2)
    r = Record.from_measurement(m, technique="baseline", accuracy=0.9, extra={"note": 1})
    assert r.name == "eager b8" and r.batch_size == 8
    assert r.latency_ms == pytest.approx(2.0) and r.p90_ms == pytest.approx(2.0)
    assert r.p99_ms == pytest.approx(2.0) and r.throughput == pytest.approx(4000.0)
    assert r.technique == "baseline" and r.accuracy == 0.9
    assert r.extra["runs"] == 10 and r.extra["threads"] == 2 and r.extra["note"] == 1
    assert Record.from_measurement(m, name="renamed").name == "renamed"
    with pytest.raises(OptkitError, match="latency"):
        Record.from_measurement(m, latency=1.0)
    with pytest.raises(OptkitError):
        Record.from_measurement("not a measurement")


def test_with_env_is_explicit():
    r = Record("x")
    assert r.env == {}
    r2 = r.with_env()
    assert r.env == {} and "cpu" in r2.env and "torch_threads" in r2.env
    assert r.with_env({"cpu": "given"}).env == {"cpu": "given"}


def test_save_and_load_round_trip(tmp_path):
    recs = sample_records()
    path = save_records(recs, tmp_path / "sub" / "results.json")
    loaded = load_records(path)
    assert [r.name for r in loaded] == ["fp32", "int8"]
    assert loaded[0] == recs[0]
    assert loaded[1].latency_ms == pytest.approx(2.0) and loaded[1].size_bytes == 1_000_000
    assert json.loads(path.read_text())["format"] == "optkit.records/1"


def test_save_merge_replaces_by_name(tmp_path):
    path = tmp_path / "r.json"
    save_records(sample_records(), path)
    save_records([Record("int8", latency_ms=1.5), Record("new")], path, merge=True)
    loaded = {r.name: r for r in load_records(path)}
    assert set(loaded) == {"fp32", "int8", "new"}
    assert loaded["int8"].latency_ms == 1.5


def test_failed_save_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "r.json"
    save_records(sample_records(), path)
    before = path.read_bytes()
    bad = Record("bad", extra={"obj": object()})
    with pytest.raises(OptkitError):
        save_records([bad], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["r.json"]


def test_write_error_cleans_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    save_records(sample_records(), path)
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_records([Record("new")], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["r.json"]


def test_load_errors(tmp_path):
    with pytest.raises(OptkitError) as info:
        load_records(tmp_path / "missing.json")
    assert info.value.parameter == "path"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(OptkitError, match="not valid JSON"):
        load_records(broken)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([{"name": "a", "accuracy": 0.5}]))
    assert load_records(bare) == [Record("a", accuracy=0.5)]


def test_save_rejects_non_records(tmp_path):
    with pytest.raises(OptkitError) as info:
        save_records([{"name": "x"}], tmp_path / "r.json")
    assert info.value.parameter == "records"


def test_to_frame_columns():
    df = to_frame(sample_records())
    assert list(df["name"]) == ["fp32", "int8"]
    for col in ("latency_ms", "size_bytes", "accuracy", "params", "parity.max_abs", "extra.calib"):
        assert col in df.columns
    assert "env" not in df.columns
    assert df["latency_ms"].tolist() == pytest.approx([4.0, 2.0])
    assert len(to_frame([])) == 0


def test_repr_is_helpful():
    text = repr(sample_records()[0])
    assert text.startswith("Record('fp32': ")
    assert "4 ms" in text and "4 MB" in text and "acc 0.9" in text
    assert repr(Record("bare")) == "Record('bare')"


def test_jsonable_strict_refuses_what_lenient_writes_as_text(tmp_path):
    from optkit.core.record import jsonable

    class HasDict:
        def to_dict(self):
            return {"a": np.float32(0.5), "b": float("nan")}

    value = {"n": np.int64(3), "t": (1, 2), "p": tmp_path, "x": np.arange(2), "d": HasDict()}
    assert jsonable(value) == {"n": 3, "t": [1, 2], "p": str(tmp_path), "x": [0, 1], "d": {"a": 0.5, "b": None}}
    with pytest.raises(OptkitError, match="cannot be written as JSON"):
        jsonable({"f": object})
    assert jsonable({"f": slice(1, 2)}, strict=False) == {"f": "slice(1, 2, None)"}


def test_saved_records_get_the_usual_permissions_not_the_temp_files(tmp_path):
    # one atomic writer (optkit.core.files): records used to keep mkstemp's 0600
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = save_records([Record("a")], tmp_path / "r.json")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_record_and_report_import_no_framework():
    import subprocess
    import sys

    code = ("import sys, optkit.core.record, optkit.core.report, optkit.core.files, optkit.runtimes.formats; "
            "bad = [m for m in ('torch', 'tensorflow', 'onnxruntime') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
