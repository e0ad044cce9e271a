"""optkit.core.variant: one measurement path (verify + interleaved timing + Records), within one workload."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from optkit.core import report, verify
from optkit.core.errors import OptkitError
from optkit.core.variant import Variant, Workload, evaluate, floats

WORKLOAD = Workload("toy MLP", "4-class toy", "toy test (64)")


@pytest.fixture(scope="module")
def toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    with torch.no_grad():
        y = net(x).argmax(1).numpy()  # labels the fp32 model gets right, so its accuracy is 1
    return net, x.numpy(), y


def test_evaluate_verifies_times_and_records_every_variant_per_batch(toy):
    import copy

    net, x, y = toy
    bf16 = copy.deepcopy(net).to(torch.bfloat16)
    variants = [
        Variant("fp32", net, precision="fp32"),
        Variant("bf16", lambda xb: bf16(xb.to(torch.bfloat16)).float(), technique="cast", precision="bf16",
                config={"dtype": "bfloat16"}),
        Variant("numpy copy", lambda xb: np.asarray(net(torch.from_numpy(xb)).detach()), runtime="numpy",
                inputs={1: x[:1], 8: x[:8]}),
    ]
    records = evaluate(variants, WORKLOAD, data=(x, y), inputs={1: torch.from_numpy(x[:1]), 8: torch.from_numpy(x[:8])},
                       convert={"fp32": torch.from_numpy, "bf16": torch.from_numpy}, max_time_s=0.05, rounds=2,
                       env={"cpu": "test"}, progress=False)
    assert [(r.name, r.batch_size) for r in records] == [("fp32", 1), ("fp32", 8), ("bf16", 1), ("bf16", 8),
                                                         ("numpy copy", 1), ("numpy copy", 8)]
    assert {r.workload for r in records} == {str(WORKLOAD)} == {"toy MLP · toy test (64)"}
    by = {(r.name, r.batch_size): r for r in records}
    assert by["fp32", 1].accuracy == 1.0 and by["numpy copy", 8].accuracy == 1.0
    assert by["fp32", 1].parity["sqnr_db"] == float("inf") and by["fp32", 1].parity["top1_agreement"] == 1.0
    assert by["numpy copy", 1].parity["max_abs"] < 1e-6
    assert 15 < by["bf16", 1].parity["sqnr_db"] < 80  # bf16 keeps ~8 bits of mantissa
    assert by["bf16", 8].extra["config"] == {"dtype": "bfloat16"} and by["bf16", 8].extra["precision"] == "bf16"
    assert all(r.latency_ms > 0 and r.env == {"cpu": "test"} for r in records)
    # closing tables: one per batch size, each against its fastest float variant
    tabs = report.tables(records, baseline=report.fastest_float)
    assert sorted(k[1] for k in tabs) == [1, 8]
    for frame in tabs.values():  # every variant is float here, so the baseline is the fastest of all
        assert frame["speedup"].max() == pytest.approx(1.0)
    assert len(floats(records)) == 6  # "numpy copy" is fp32 too


def test_ratios_across_workloads_are_refused(toy):
    net, x, y = toy
    one = evaluate([Variant("a", net)], WORKLOAD, data=(x, y), inputs={1: torch.from_numpy(x[:1])},
                   convert=torch.from_numpy, max_time_s=0.02, rounds=1, env={}, progress=False)
    other = evaluate([Variant("b", net)], Workload("toy MLP", "4-class toy", "other split"), data=(x, y),
                     inputs={1: torch.from_numpy(x[:1])}, convert=torch.from_numpy, max_time_s=0.02, rounds=1,
                     env={}, progress=False)
    with pytest.raises(OptkitError, match="workload"):
        report.table(one + other, baseline="a")


def test_bad_input_names_the_parameter(toy):
    net, x, y = toy
    with pytest.raises(OptkitError, match="names two variants"):
        evaluate([Variant("a", net), Variant("a", net)], WORKLOAD, data=(x, y), inputs={1: x[:1]})
    with pytest.raises(OptkitError, match="^workload="):
        evaluate([Variant("a", net)], "toy", data=(x, y), inputs={1: x[:1]})
    with pytest.raises(OptkitError, match="^reference="):
        evaluate([Variant("a", net)], WORKLOAD, data=(x, y), inputs={1: x[:1]}, reference="nope")
    with pytest.raises(OptkitError, match="^data="):
        evaluate([Variant("a", net)], WORKLOAD, data=x, inputs={1: x[:1]})
    with pytest.raises(OptkitError, match="^precision="):
        Variant("a", net, precision="int3")
    with pytest.raises(OptkitError, match="^predict="):
        Variant("a", "not a model")
    with pytest.raises(OptkitError, match="^workload=|^model="):
        Workload("", "t", "e")


def test_a_module_in_training_mode_is_refused(toy):
    net, x, y = toy
    train = nn.Sequential(nn.Linear(8, 4)).train()
    with pytest.raises(OptkitError, match="training mode"):
        verify.predict_all(train, torch.from_numpy(x))


def test_accuracy_is_top1_and_checks_shapes():
    logits = np.array([[0.1, 0.9], [2.0, 1.0], [0.0, 3.0]])
    assert verify.accuracy(logits, [1, 0, 0]) == pytest.approx(2 / 3)
    assert verify.accuracy(torch.tensor(logits), torch.tensor([1, 0, 1])) == 1.0
    with pytest.raises(OptkitError, match="does not match"):
        verify.accuracy(logits, [1, 0])


def test_variant_repr_says_what_it_is(toy):
    net, _, _ = toy
    text = repr(Variant("int8", net, technique="PT2E static", runtime="pytorch", precision="int8",
                        config={"per_channel": True}, size_bytes=2_500_000))
    assert text == "Variant('int8': PT2E static; pytorch; int8; per_channel=True; 2.5 MB)"


def test_tables_show_agreement_extra_and_chosen_columns(toy):
    net, x, y = toy
    records = evaluate([Variant("a", net), Variant("b", lambda xb: net(xb) * 0.5, technique="scaled")], WORKLOAD,
                       data=(x, y), inputs={4: torch.from_numpy(x[:4])}, convert=torch.from_numpy, max_time_s=0.02,
                       rounds=1, env={}, progress=False)
    for r in records:
        r.extra["seeds"] = 3
    frame = report.table(records, baseline="a", extra=["seeds"], columns=["technique", "speedup", "agreement", "seeds"])
    assert list(frame.columns) == ["technique", "speedup", "agreement", "seeds"]
    assert frame.loc["b", "agreement"] == 1.0 and frame.loc["b", "seeds"] == 3  # halving logits keeps every arg-max
    with pytest.raises(OptkitError, match="^columns="):
        report.table(records, baseline="a", columns=["nope"])


def test_unlabelled_data_with_named_inputs_and_several_outputs():
    def two_inputs(feed):
        a, b = feed["a"], feed["b"]
        return [a + b, a * b]  # two outputs, like a detector's boxes and scores

    feed = {"a": np.arange(12, dtype=np.float32).reshape(6, 2), "b": np.ones((6, 2), np.float32)}
    noisy = lambda f: [o + 1e-3 for o in two_inputs(f)]  # noqa: E731
    records = evaluate([Variant("ref", two_inputs, runtime="numpy"), Variant("noisy", noisy, runtime="numpy")],
                       WORKLOAD, data=(feed, None), inputs={2: {"a": feed["a"][:2], "b": feed["b"][:2]}},
                       eval_batch_size=4, max_time_s=0.02, rounds=1, env={}, progress=False)
    by = {r.name: r for r in records}
    assert by["ref"].accuracy is None and by["noisy"].accuracy is None
    assert by["noisy"].parity["max_abs"] == pytest.approx(1e-3, rel=1e-3)
    outs = verify.predict_all(two_inputs, feed, batch_size=4, all_outputs=True)
    assert [o.shape for o in outs] == [(6, 2), (6, 2)]
    with pytest.raises(OptkitError, match="different numbers of rows"):
        verify.predict_all(two_inputs, {"a": feed["a"], "b": feed["b"][:3]})


def test_precomputed_outputs_are_used_and_single_scores_are_refused(toy):
    net, x, y = toy
    calls = []

    def counted(xb):
        calls.append(len(xb))
        return net(xb)

    ref = verify.predict_all(net, torch.from_numpy(x), all_outputs=True)
    evaluate([Variant("a", counted)], WORKLOAD, data=(x, y), inputs={2: torch.from_numpy(x[:2])},
             outputs={"a": ref}, max_time_s=0.01, rounds=1, warmup=1, min_repeats=2, env={}, progress=False)
    assert set(calls) == {2}  # only timed calls at batch 2: the 64 evaluation rows were not run again
    with pytest.raises(OptkitError, match="^outputs="):
        evaluate([Variant("a", net)], WORKLOAD, data=(x, y), inputs={2: x[:2]}, outputs={"b": ref})
    with pytest.raises(OptkitError, match="one score per row"):
        verify.accuracy(np.zeros((3, 1)), [0, 1, 0])


def test_sync_is_called_around_every_timed_call(toy):
    net, x, y = toy
    synced = []
    evaluate([Variant("a", net)], WORKLOAD, data=(x, y), inputs={2: torch.from_numpy(x[:2])},
             convert=torch.from_numpy, max_time_s=0.01, rounds=1, warmup=1, min_repeats=2, env={},
             progress=False, sync=lambda: synced.append(1))
    assert len(synced) >= 2  # bench.compare syncs before reading the clock (what a GPU needs)


def test_evaluate_records_p95_and_the_memory_a_call_adds():
    net = nn.Sequential(nn.Linear(64, 4096), nn.ReLU(), nn.Linear(4096, 4)).eval()
    x = torch.randn(512, 64)
    records = evaluate([Variant("wide", net, precision="fp32")], WORKLOAD, data=(x.numpy(), None),
                       inputs={1: x[:1], 512: x}, convert=torch.from_numpy, max_time_s=0.05, rounds=2,
                       env={"cpu": "test"}, progress=False)
    by = {r.batch_size: r for r in records}
    assert all(r.p90_ms <= r.p95_ms <= r.p99_ms for r in records)
    # batch 512 makes a 512 x 4096 fp32 hidden layer (8 MB) twice (linear + relu): the call must add
    # several MB; batch 1 adds almost nothing. (Resident memory is counted in 4 kB pages.)
    assert by[512].peak_mem_bytes > 4e6
    assert by[1].peak_mem_bytes < by[512].peak_mem_bytes / 10
    frame = report.table([r for r in records if r.batch_size == 512])
    assert frame.loc["wide", "peak_mem_mb"] == pytest.approx(by[512].peak_mem_bytes / 1e6)
    no_mem = evaluate([Variant("wide", net)], WORKLOAD, data=(x.numpy(), None), inputs={1: x[:1]},
                      convert=torch.from_numpy, max_time_s=0.02, rounds=1, env={}, progress=False, memory=False)
    assert no_mem[0].peak_mem_bytes is None
