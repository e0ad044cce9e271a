"""optkit.techniques.quantize.pt2e_int8 / drop_dead_weights_: the PT2E steps static_int8 and the capstone share."""
from __future__ import annotations

import pytest
import torch

from optkit.core import sizes, verify
from optkit.core.errors import OptkitError
from optkit.data import models
from optkit.techniques import quantize as Q


@pytest.fixture(scope="module")
def trained(digits):
    models.set_seed(0)
    net = models.build("mlp", in_features=64, hidden=(128, 64))
    models.train(net, digits, epochs=3, progress=False)
    return net.eval()


def _exported(net, x):
    return torch.export.export(net, (x[:8],)).module()


def test_static_and_dynamic_on_an_exported_module_keep_the_answers(trained, digits):
    x = torch.from_numpy(digits.test.x)
    ref = trained(x)
    calib = [(torch.from_numpy(digits.calib.x[i:i + 8]),) for i in range(0, 128, 8)]  # the export fixed batch 8
    static, seen = Q.pt2e_int8(_exported(trained, x), calib)
    assert seen == 128
    dynamic, _ = Q.pt2e_int8(_exported(trained, x), calib[:1], dynamic=True)
    for converted in (static, dynamic):
        out = converted(x[:8])  # the export fixed batch 8 here
        assert verify.compare_outputs(ref[:8], out).top1_agreement >= 0.875
        assert verify.sqnr(ref[:8], out) > 20  # int8 keeps ~25 dB or more on a trained MLP


def test_drop_dead_weights_leaves_only_what_the_graph_reads(trained, digits):
    x = torch.from_numpy(digits.test.x[:8])
    converted, _ = Q.pt2e_int8(_exported(trained, x), [(x,)])
    before = len(converted.state_dict())
    size = sizes.model_size(converted)
    out = converted(x)
    assert Q.drop_dead_weights_(converted) is converted  # in place, returns its argument
    assert len(converted.state_dict()) < before  # convert_pt2e left the float weights attached
    assert sizes.model_size(converted) == size  # model_size never counted them
    assert torch.equal(converted(x), out)


def test_no_calibration_batch_is_refused(trained, digits):
    x = torch.from_numpy(digits.test.x[:8])
    with pytest.raises(OptkitError, match="^calibration_args="):
        Q.pt2e_int8(_exported(trained, x), [])
