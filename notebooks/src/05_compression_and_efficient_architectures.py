# %% [markdown]
# # 05 · Compression and efficient architectures
#
# Quantization stores every weight in fewer bits; pruning removes weights. Three more ideas make a
# model smaller or cheaper, and each pays in a different currency:
#
# - **weight sharing** lets many weights use one stored value: a layer keeps a *codebook* of 16
#   values and, for every weight, a 4-bit index into it. Storage falls about 8x; compute does not;
# - **low-rank factorization** replaces one big matrix by two thin ones: fewer parameters *and*
#   fewer multiply-adds;
# - **efficient blocks** (depthwise-separable convolutions, MobileNetV2's inverted residual) are
#   designed cheap from the start; whether fewer multiply-adds mean less time is a question for the
#   hardware.
#
# **You will learn to**
# - cluster a layer's weights by k-means into a per-layer codebook, count the bytes it really needs
#   (indices at log2 k bits plus the codebook) against fp32 and int8, and fine-tune the centroids;
# - factorize Linear and Conv layers by SVD, choosing the rank by retained energy or by a target
#   compression, and measure parameters, MACs, latency and accuracy with and without fine-tuning;
# - compare a standard convolution with depthwise-separable and inverted-residual blocks of the same
#   shapes, and see why a 7x MAC saving is not a 7x speed-up on a CPU.
#
# **Time:** about 1 minute at the default parameters on a 2-core laptop. **GPU:** not needed.
#
# Every number below is printed by the cell that measured it; timing cells say which machine and
# thread count they ran on.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

import optkit
from optkit.core import bench, record, report, variant
from optkit.techniques import compress
from optkit import data
from optkit.course.exercises import nb05 as exercises
from optkit.data import models
from optkit.course import claims, notebook
from optkit.data import zoo


# %% tags=["parameters"]
# Default parameters (papermill -p NAME VALUE overrides them; `make params NB=05` lists them)
threads = None  # torch intra-op threads; None: every core this process may use
kmeans_k = 16  # centroids per layer for the main weight-sharing model
small_k = 4  # a second, harsher codebook size, to show what fine-tuning the centroids recovers
k_sweep = [2, 4, 8, 16, 32]  # codebook sizes of the sweep
eval_samples = 2000  # validation images scoring the sweeps (the final variants use the full test split)
finetune_samples = 5000  # training images of each fine-tune
finetune_epochs = 1  # epochs of each fine-tune
kmeans_lr = 1e-3  # AdamW learning rate for fine-tuning the centroids
svd_layers = ["fc1"]  # the large Linear layers to factorize (fc1 holds 97 % of the weights)
svd_compression = 4.0  # target: this many times fewer parameters in those layers
svd_sweep = [2.0, 4.0, 8.0, 16.0, 32.0]  # compressions of the sweep (no fine-tuning)
conv_layers = ["conv2"]  # conv layers factorized by retained energy
conv_energy = 0.9  # fraction of the squared singular values the conv factorization keeps
svd_lr = 3e-4  # AdamW learning rate for fine-tuning the factorized model
linear_tokens = 1024  # rows through MiniLM's feed-forward projection in section 2.2 (8 sentences x 128 tokens)
block_channels = 64  # input and output channels of the block comparison
block_size = 28  # input height and width of the block comparison
block_batch = 8  # batch size of the block comparison
expansion = 6  # MobileNetV2 expansion factor t
max_time_s = 0.3  # time budget per latency measurement (seconds)
output_dir = "../runs/artifacts/05_compression_and_efficient_architectures"

# %%
params = notebook.check_parameters(
    ranges={"threads": (1, 256), "kmeans_k": (1, 256), "small_k": (1, 256), "k_sweep": (1, 256),
            "eval_samples": (100, 5000), "finetune_samples": (128, 55000), "finetune_epochs": (1, 50),
            "kmeans_lr": (1e-7, 1.0), "svd_compression": (1.01, 1000.0), "svd_sweep": (1.01, 1000.0),
            "conv_energy": (0.01, 1.0), "svd_lr": (1e-7, 1.0), "linear_tokens": (1, 65536), "block_channels": (1, 1024),
            "block_size": (4, 512), "block_batch": (1, 1024), "expansion": (1, 16), "max_time_s": (0.01, 600)})
env = notebook.setup(threads=threads)

# %% [markdown]
# ## 0 · The model
# The small reference CNN (`SmallCNN`: two convolutions, two linear layers) trained on
# Fashion-MNIST. Its first linear layer `fc1` (1568 → 128) holds 97 % of the weights: the
# "large Linear layer" that factorization targets. Sweeps are scored on a fixed `eval_samples`-image
# subset of the validation split; the final variants on the full test split.

# %%
# NBCHECK_APPROX accuracy
fmnist = data.fashion_mnist()
finetune_data = data.fashion_mnist(n_train=finetune_samples)
base = models.pretrained("small_cnn")
val_subset = fmnist.val.subset(eval_samples)
x1, x32 = fmnist.example_batch(1), fmnist.example_batch(32)


def val_acc(net):
    return models.evaluate(net, val_subset).accuracy


def test_acc(net):
    return models.evaluate(net, fmnist, split="test").accuracy


def fine_tune(net, lr):
    models.train(net, finetune_data, epochs=finetune_epochs, lr=lr, progress=False, val_split=None)
    return net


base_test, base_val = test_acc(base), val_acc(base)
base_store = compress.storage_report(base)
print(f"SmallCNN: {models.count_params(base):,} parameters, {models.count_macs(base, x1):,} MACs per image, "
      f"test accuracy {100 * base_test:.2f} %, validation subset {100 * base_val:.2f} %")
print({name: tuple(m.weight.shape) for name, m in base.named_modules() if hasattr(m, "weight")})
print(base_store)

# %% [markdown]
# ## 1 · Weight sharing by k-means
# Take all the weights of one layer, cluster their *values* into `k` groups (one-dimensional
# k-means), and replace every weight by its group's centroid. The layer then holds at most `k`
# distinct values, so it can be stored as a `k`-entry **codebook** plus one **index** per weight,
# `ceil(log2 k)` bits each: 4 bits for 16 centroids. This is the second stage of Han et al.'s
# *Deep Compression* (2016). `compress.kmeans_1d` starts the centroids spread linearly between the
# smallest and largest weight (the paper's finding: it keeps centroids for the rare large weights,
# which matter most) and runs Lloyd's iterations.

# %%
# NBCHECK_APPROX sqnr error float
w = base.fc1.weight.detach()
centroids, idx = compress.kmeans_1d(w, kmeans_k)
fig, ax = plt.subplots(figsize=(9, 3))
ax.hist(w.flatten().numpy(), bins=200, color="tab:blue", alpha=0.7)
for c in centroids.tolist():
    ax.axvline(c, color="tab:red", lw=0.8)
ax.set(title=f"fc1: {w.numel():,} weights and the {kmeans_k} k-means centroids (red)", xlabel="weight", ylabel="count")
fig.tight_layout()
plt.show()
err = (centroids[idx] - w)
print(f"{torch.unique(centroids[idx]).numel()} distinct values; centroids from {centroids.min():.4f} to "
      f"{centroids.max():.4f}; mean |error| per weight {err.abs().mean():.5f} "
      f"(mean |weight| {w.abs().mean():.5f}); SQNR {optkit.core.verify.sqnr(w, centroids[idx]):.1f} dB")

# %% [markdown]
# `compress.share_weights` does this for every Linear and Conv2d layer, each with its own codebook,
# and swaps in `SharedLinear` / `SharedConv2d`: modules that keep the codebook as a trainable
# parameter and the indices as a `uint8` buffer, and rebuild `weight = codebook[indices]` on every call.

# %%
# NBCHECK_APPROX accuracy
shared = compress.share_weights(base, kmeans_k)
print(shared.fc1, shared.conv2, sep="\n")
print("distinct values per layer:", {n: m.distinct_values() for n, m in compress.shared_layers(shared).items()})
shared_before = test_acc(shared)
print(f"test accuracy right after clustering: {100 * shared_before:.2f} % (fp32 {100 * base_test:.2f} %, "
      f"{100 * (shared_before - base_test):+.2f} points)")

# %% [markdown]
# ### 1.1 What it costs to store
# Counted for the weight tensors: fp32 (4 bytes a weight), int8 (1 byte a weight plus one fp32 scale
# per output channel, as per-channel quantization stores it) and shared (indices at `ceil(log2 k)`
# bits, padded to whole bytes, plus `k` fp32 centroids per layer). Biases stay fp32 in every case.

# %%
store = compress.storage_report(shared)
frame = store.to_frame()
frame["int8/stored"] = frame["int8_bytes"] / frame["stored_bytes"]
print(store)
frame.round(2)

# %% [markdown]
# The counting is not a promise: `compress.pack_indices` really packs every layer's indices at
# 4 bits, and the byte strings have exactly the counted length (and unpack to the same indices).

# %%
packed = {n: compress.pack_indices(m.indices, compress.index_bits(m.k)) for n, m in compress.shared_layers(shared).items()}
round_trip = all(torch.equal(compress.unpack_indices(packed[n], compress.index_bits(m.k), m.indices.numel()),
                             m.indices.flatten().long()) for n, m in compress.shared_layers(shared).items())
packed_bytes = sum(len(b) for b in packed.values())
print(f"packed indices: {packed_bytes:,} B (counted {sum(s.index_bytes for s in store.layers):,} B); "
      f"round trip exact: {round_trip}")
print(f"weights: fp32 {store.fp32_bytes:,} B -> shared {store.stored_bytes:,} B ({store.ratio:.2f}x smaller); "
      f"int8 would be {store.int8_bytes:,} B ({store.int8_ratio:.2f}x)")
print(f"whole model with biases: {base_store.model_bytes:,} B -> {store.model_bytes:,} B ({store.model_ratio:.2f}x)")
notebook.headline(f"k-means {kmeans_k}: stored weights smaller than fp32 by", store.ratio, "x", fmt=".2f",
                  note=f"int8 per-channel: {store.int8_ratio:.2f}x")

# %% [markdown]
# ### 1.2 How many centroids?
# Fewer centroids, fewer bits, more error. Each `k` is clustered afresh and scored on the
# validation subset, before any fine-tuning:

# %%
# NBCHECK_APPROX accuracy
k_rows = []
for k in k_sweep:
    net = compress.share_weights(base, int(k))
    k_rows.append({"k": k, "bits/index": compress.index_bits(k), "val accuracy (%)": 100 * val_acc(net),
                   "fp32/stored": compress.storage_report(net).ratio})
k_frame = pd.DataFrame(k_rows).set_index("k")
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(k_frame["fp32/stored"], k_frame["val accuracy (%)"], "o-")
for k, row in k_frame.iterrows():
    ax.annotate(f"k={k}", (row["fp32/stored"], row["val accuracy (%)"]), textcoords="offset points", xytext=(4, -10))
ax.axhline(100 * base_val, color="0.5", ls="--", label="fp32")
ax.set(xlabel="weights smaller than fp32 by (x)", ylabel="validation accuracy (%)",
       title="k-means weight sharing, no fine-tuning")
ax.legend()
fig.tight_layout()
plt.show()
k_frame.round(2)

# %% [markdown]
# More centroids than weights is not clustering; `conv1` has 144 weights:

# %%
try:
    compress.share_weights(base, {"conv1": 256})
except optkit.core.errors.OptkitError as exc:
    print("OptkitError:", exc)

# %% [markdown]
# ### 1.3 Fine-tuning the centroids
# The assignments stay fixed; the centroids move. Since `weight = codebook[indices]`, autograd
# gives each centroid the **sum of the gradients of the weights that share it** (the paper's
# update rule, for free). Any training loop works: here `models.train` on `finetune_samples`
# images. The harsher `small_k` codebook shows what fine-tuning can recover; at `kmeans_k` expect
# little to recover.

# %%
# NBCHECK_APPROX accuracy
shared_small = compress.share_weights(base, small_k)
small_before = test_acc(shared_small)
fine_tune(shared, kmeans_lr)
fine_tune(shared_small, kmeans_lr)
shared_after, small_after = test_acc(shared), test_acc(shared_small)
for k, before, after, net in [(kmeans_k, shared_before, shared_after, shared), (small_k, small_before, small_after, shared_small)]:
    print(f"k = {k:>2}: test accuracy {100 * before:.2f} % -> {100 * after:.2f} % after fine-tuning the centroids "
          f"(fp32 {100 * base_test:.2f} %); still at most {k} values per layer: "
          f"{max(m.distinct_values() for m in compress.shared_layers(net).values()) <= k}")
notebook.headline(f"k-means {kmeans_k}, centroids fine-tuned: accuracy change", 100 * (shared_after - base_test),
                  "points", fmt="+.2f", note=f"test accuracy {100 * shared_after:.2f} %")

# %% [markdown]
# For inference, `compress.decompress` turns the shared layers back into ordinary `Linear` and
# `Conv2d` layers holding the shared values: same outputs, ordinary kernels, no gather per call.
# Weight sharing is a **storage** format: the file (or the download, or flash on a device) is ~8x
# smaller, while the model runs as fp32. Getting compute savings too needs kernels that work on the
# indices directly (lookup-table GEMMs on some accelerators), or int8 quantization on top.

# %%
shared_dense = compress.decompress(shared)
with torch.no_grad():
    parity = optkit.core.verify.compare_outputs(shared(fmnist.example_batch(256)), shared_dense(fmnist.example_batch(256)))
print(f"decompressed vs codebook form: max |difference| {parity.max_abs:.2e}, top-1 agreement "
      f"{100 * parity.top1_agreement:.1f} %")
print(type(shared_dense.fc1).__name__, "with", torch.unique(shared_dense.fc1.weight).numel(), "distinct values")

# %% [markdown]
# ## 2 · Low-rank factorization by SVD
# A weight matrix `W` (`out × in`) has a singular value decomposition `W = U S Vᵀ`. Keeping the
# `r` largest singular values gives the best rank-`r` approximation (Eckart–Young), which is a
# product of two thin matrices: `W ≈ A B` with `A = U_r sqrt(S_r)` (`out × r`) and
# `B = sqrt(S_r) V_rᵀ` (`r × in`). One `Linear(in, out)` becomes `Linear(in, r)` followed by
# `Linear(r, out)`: `r (in + out)` weights instead of `in × out`, and as many fewer multiply-adds.
# A convolution is a matrix too once its kernel is flattened (`out × in·kh·kw`): it becomes a
# `kh × kw` conv to `r` channels followed by a 1x1 conv.
#
# How fast the singular values fall decides how low the rank can go:

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
ranks = {}
for name in [*svd_layers, *conv_layers]:
    layer = base.get_submodule(name)
    s = compress.singular_values(layer)
    energy = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
    axes[0].semilogy(np.arange(1, len(s) + 1), (s / s[0]).numpy(), label=name)
    axes[1].plot(np.arange(1, len(s) + 1), energy.numpy(), label=name)
    ranks[name] = {"full rank": len(s), f"rank for {100 * conv_energy:.0f} % energy": compress.choose_rank(layer, energy=conv_energy),
                   f"rank for {svd_compression:g}x fewer weights": compress.choose_rank(layer, compression=svd_compression)}
axes[0].set(xlabel="index", ylabel="singular value / largest", title="spectrum")
axes[1].axhline(conv_energy, color="0.5", ls="--")
axes[1].set(xlabel="rank r", ylabel="retained energy", title="sum(s[:r]^2) / sum(s^2)")
for ax in axes:
    ax.legend()
fig.tight_layout()
plt.show()
pd.DataFrame(ranks).T

# %% [markdown]
# Two rules choose `r` (`compress.choose_rank`): keep a fraction of the **energy** (the squared
# singular values, i.e. of the squared Frobenius norm), or hit a **target compression** of the
# layer's weights. Before fine-tuning, accuracy against the compression of `fc1` alone:

# %%
# NBCHECK_APPROX accuracy verdict
sweep_rows = []
for c in svd_sweep:
    net = compress.factorize(base, layers=svd_layers, compression=c)
    kept = sum(p.numel() for n in svd_layers for p in net.get_submodule(n).parameters())
    sweep_rows.append({"compression": c, "ranks": {n: net.get_submodule(n).rank for n in svd_layers},
                       "params in those layers": kept, "val accuracy (%)": 100 * val_acc(net)})
svd_frame = pd.DataFrame(sweep_rows).set_index("compression")
display(svd_frame.round(2))
at = min(svd_sweep, key=lambda c: abs(c - svd_compression))
claims.check(f"{'+'.join(svd_layers)} at {at:g}x fewer weights loses at most 1 point of validation accuracy, "
             "before any fine-tuning", holds=100 * base_val - svd_frame.loc[at, "val accuracy (%)"] <= 1.0,
             evidence=f"{svd_frame.loc[at, 'val accuracy (%)']:.2f} % vs fp32 {100 * base_val:.2f} % "
                      f"on {len(val_subset.y):,} validation images", depends=());

# %% [markdown]
# When the spectrum falls fast, a quarter of the weights keeps almost all of the accuracy before
# any fine-tuning, and the accuracy breaks only once the rank drops into single digits; the claim
# above says whether `fc1` is such a layer on this run. A layer trained with weight decay on a
# simple task is often like this. Fewer weights are not yet less *time*, though: that needs a layer
# big enough that its matrix product dominates the call (section 2.2).
#
# ### 2.1 Factorized layers replace the originals
# `compress.factorize` returns a copy of the model in which each chosen layer is a drop-in
# `LowRankLinear` / `LowRankConv2d` (same input, same output). At full rank the output is the
# original's (the test suite checks it); below it, here the main variant: `svd_layers` at
# `svd_compression`, then `conv_layers` added at `conv_energy` of their energy.

# %%
svd = compress.factorize(base, layers=svd_layers, compression=svd_compression)
svd_conv = compress.factorize(svd, layers=conv_layers, energy=conv_energy)
print(svd.fc1 if "fc1" in svd_layers else svd)
print(svd_conv.get_submodule(conv_layers[0]) if conv_layers else "")


def layer_params(net, names):
    return sum(p.numel() for n in names for p in net.get_submodule(n).parameters())


svd_rows = {}
for name, net in [("fp32", base), (f"SVD {'+'.join(svd_layers)} {svd_compression:g}x", svd),
                  (f"  + {'+'.join(conv_layers)} at {100 * conv_energy:.0f} % energy", svd_conv)]:
    svd_rows[name] = {"params": models.count_params(net), "params in svd_layers": layer_params(net, svd_layers),
                      "params in conv_layers": layer_params(net, conv_layers),
                      "MACs/image": models.count_macs(net, x1), "test acc, no fine-tune (%)": 100 * test_acc(net)}
pd.DataFrame(svd_rows).T.round(2)

# %% [markdown]
# A rank above the layer's full rank is not a factorization; it is refused:

# %%
try:
    compress.factorize_linear(base.fc2, 11)
except optkit.core.errors.OptkitError as exc:
    print("OptkitError:", exc)

# %% [markdown]
# Fine-tuning (all weights, `finetune_samples` images, `svd_lr`) lets the rest of the network adapt
# to the approximation:

# %%
# NBCHECK_APPROX accuracy
for name, net in [(f"SVD {'+'.join(svd_layers)} {svd_compression:g}x", svd),
                  (f"  + {'+'.join(conv_layers)} at {100 * conv_energy:.0f} % energy", svd_conv)]:
    fine_tune(net, svd_lr)
    svd_rows[name]["test acc, fine-tuned (%)"] = 100 * test_acc(net)
svd_table = pd.DataFrame(svd_rows).T
svd_table.loc["fp32", "test acc, fine-tuned (%)"] = 100 * base_test
svd_table["fc1 params ratio" if svd_layers == ["fc1"] else "svd_layers params ratio"] = (
    svd_table.loc["fp32", "params in svd_layers"] / svd_table["params in svd_layers"])
svd_name = f"SVD {'+'.join(svd_layers)} {svd_compression:g}x"
notebook.headline(f"SVD {svd_compression:g}x on {'+'.join(svd_layers)}, fine-tuned: accuracy change",
                  svd_table.loc[svd_name, "test acc, fine-tuned (%)"] - 100 * base_test, "points", fmt="+.2f",
                  note=f"{svd_table.iloc[1, -1]:.2f}x fewer parameters in those layers")
svd_table.round(2)

# %% [markdown]
# Fine-tuning a model that barely lost anything can cost a little: a few thousand images pull the
# weights toward *that* sample. Where factorization was aggressive (see the sweep above, or run
# with `-p svd_compression 16`), fine-tuning should recover points; where it was mild, skip it.
# This CNN's latencies are in the summary (section 4).
#
# ### 2.2 When does factorization save time? A big linear layer
# `fc1` is small: one matrix-vector product of 1568 × 128 per image, a sliver of this CNN's time.
# Factorization should pay where a big matrix product dominates: a transformer's projections, run
# on every token. Here is one from all-MiniLM-L6-v2 (the sentence encoder of notebooks 02 and 06):
# the first feed-forward projection of its first layer, 384 → 1536, on `linear_tokens` token vectors
# (8 sentences of 128 tokens), factorized to `svd_compression` times fewer weights and timed
# interleaved with the original. Latency does not depend on the values, so random token vectors do.

# %%
# NBVAL_IGNORE_OUTPUT
encoder, _ = zoo.minilm()
proj = next(m for n, m in encoder.named_modules() if n.endswith("layer.0.intermediate.dense"))
rank = compress.choose_rank(proj, compression=svd_compression)
proj_lr = compress.factorize_linear(proj, rank).eval()
s_proj = compress.singular_values(proj)
kept_energy = float((s_proj[:rank] ** 2).sum() / (s_proj ** 2).sum())
tokens = torch.randn(linear_tokens, proj.in_features)
proj_cmp = bench.compare({"MiniLM projection, dense": compress.forward_call(proj, tokens),
                          f"rank {rank} factorized": compress.forward_call(proj_lr, tokens)},
                         batch_size=linear_tokens, max_time_s=max_time_s)
print(f"{proj.in_features} -> {proj.out_features}: {proj.weight.numel():,} weights; rank {rank}: "
      f"{sum(p.numel() for p in proj_lr.parameters()) - proj.out_features:,} weights, "
      f"{100 * kept_energy:.0f} % of the energy kept")
display(proj_cmp.table().round(3))
claims.faster(f"factorizing MiniLM's 384 -> 1536 projection {svd_compression:g}x makes it faster on "
              f"{linear_tokens} tokens", proj_cmp[f"rank {rank} factorized"], proj_cmp["MiniLM projection, dense"],
              depends=("cores", "avx512"));

# %% [markdown]
# Two things to read here. The time: a big matrix product is compute-bound, so fewer multiply-adds
# should turn into less time, unlike `fc1` in the CNN (the claim says whether it did on this
# machine). And the catch, the energy kept (printed above): a trained transformer's projections
# tend to have flat spectra, so expect the factorized layer to keep much less of its weight matrix
# than `fc1` did at the same compression.
# For a transformer, factorization is a starting point that needs fine-tuning (or distillation,
# notebook 04) to win back the accuracy; the speed it buys is only worth that work on layers this big.
#
# ## 3 · Efficient blocks
# Instead of compressing a trained layer, design the layer cheap. A standard `3x3` convolution from
# `C` to `C` channels costs `9 C²` multiply-adds per output pixel. Three alternatives with the same
# input and output shapes:
#
# - **depthwise-separable** (MobileNetV1): a depthwise 3x3 (one filter per channel: `9 C`) then a
#   pointwise 1x1 that mixes channels (`C²`): `9C + C²`, about 8x fewer at `C = 64`;
# - **inverted residual** (MobileNetV2): expand 1x1 to `t C`, depthwise 3x3, project 1x1 back to
#   `C` with **no** activation (the "linear bottleneck"), plus a residual add: `2 t C² + 9 t C`;
# - ResNet's **basic block** (two 3x3 convs, what `ResNetCNN` is made of), for scale: `18 C²`.

# %%
c, hw = block_channels, block_size
blocks = {"standard 3x3 conv": compress.ConvBNReLU(c, c),
          "depthwise-separable": compress.DepthwiseSeparableConv(c, c),
          f"inverted residual (t={expansion})": compress.InvertedResidual(c, c, expansion=expansion),
          "ResNet basic block (2 convs)": models.BasicBlock(c, c)}
xb = torch.randn(block_batch, c, hw, hw)
for b in blocks.values():
    b.eval()
    assert b(xb[:1]).shape == (1, c, hw, hw)
block_rows = {name: {"params": models.count_params(b), "MACs/image": models.count_macs(b, xb[:1])}
              for name, b in blocks.items()}
block_frame = pd.DataFrame(block_rows).T
block_frame["MACs vs standard"] = block_frame["MACs/image"] / block_frame.loc["standard 3x3 conv", "MACs/image"]
print(f"input and output: ({block_batch}, {c}, {hw}, {hw}); every block keeps the shape")
block_frame.round(3)

# %% [markdown]
# Note the inverted residual at `t = 6`: at the *same* width it costs **more** than one standard
# conv (`12 C² + 54 C` against `9 C²`), though less than the basic block it replaces. MobileNetV2 is
# cheap because its residual stream is **narrow** (16-32 channels in the early stages) and only the
# depthwise conv runs at the expanded width, not because the block is cheap at equal width.
#
# Now time them. `compress.compare_blocks` runs each block in both memory layouts (torch's default
# contiguous one and `channels_last`; the faster counts), all of them interleaved in one comparison,
# and returns one Record per block. Those records carry a workload of their own (a block on a random
# feature map), so no table will ever divide them by a model measured on Fashion-MNIST:

# %%
# NBVAL_IGNORE_OUTPUT
block_records = compress.compare_blocks(blocks, xb, max_time_s=max_time_s, env=env)
block_summary = report.table(block_records, baseline="standard 3x3 conv", extra=["layout"],
                             columns=["params", "macs", "latency_ms", "p95_ms", "peak_mem_mb", "layout", "speedup"])
block_summary["MAC saving"] = block_summary.loc["standard 3x3 conv", "macs"] / block_summary["macs"]
block_summary["speedup / MAC saving"] = block_summary["speedup"] / block_summary["MAC saving"]
print("Measured on:", bench.environment_line(), f"| {block_records[0].workload} | latency_ms: the faster layout "
      "| speedup: vs the standard conv")
ds_speed, ds_saving = block_summary.loc["depthwise-separable", ["speedup", "MAC saving"]]
notebook.headline("depthwise-separable vs standard conv: MAC saving turned into speed-up", ds_speed, "x", fmt=".2f",
                  note=f"MAC saving {ds_saving:.1f}x; {bench.environment_line()}")
display(block_summary.round(3))
claims.check("the depthwise-separable block turns less than half of its MAC saving into speed-up",
             holds=bool(ds_speed < 0.5 * ds_saving), evidence=f"{ds_saving:.1f}x fewer MACs, {ds_speed:.2f}x faster",
             depends=("cores", "avx512"));

# %% [markdown]
# **Why the MAC saving does not become the same speed-up on a CPU.** A dense 3x3 conv does 9 C
# multiply-adds for every input value it loads, so oneDNN's kernels keep the vector units busy:
# it is **compute-bound**. A depthwise conv does only 9 multiply-adds per loaded value, with no
# reuse across channels: it is **memory-bound**, waiting on loads, running at a fraction of the
# peak rate. Each block also adds operators (BatchNorm, activations, a second conv), and each
# operator has a fixed cost per call. So expect the depthwise-separable block to remove most of the
# multiply-adds but far less of the time (a `speedup / MAC saving` well below 1; the claim above
# says how it went here). The
# MAC count is the right measure of *work*; latency has to be measured on the target. (Mobile
# NPUs and GPUs with depthwise kernels close more of the gap; the ratio is a property of the
# hardware and the kernel library, not of the block.)
#
# ## 4 · Summary
# Every model variant goes through the one measurement path, `variant.evaluate`: test accuracy on
# the full test split, top-1 agreement with the fp32 model's outputs, and latency at batch 1 and 32,
# every variant timed interleaved in one comparison per batch size (one table each).
# `compress.as_variant` sizes each variant by what it stores (shared layers: packed indices +
# codebooks; everything else fp32) and runs k-means variants **decompressed** (ordinary fp32
# layers, what you deploy); one row times the codebook form, which rebuilds its weights on every
# call (its `params` counts only what is trainable in it, the codebooks and biases; its indices are
# buffers). Every variant computes in fp32, so the baseline is the uncompressed fp32 model.

# %%
combo = compress.share_weights(svd, kmeans_k)  # techniques compose: k-means on the fine-tuned factorized model
tuned = {"finetune_samples": finetune_samples, "finetune_epochs": finetune_epochs}
km_cfg = lambda k: {"k": k, "lr": kmeans_lr, **tuned}  # noqa: E731
svd_cfg = {"layers": svd_layers, "compression": svd_compression, "lr": svd_lr, **tuned}
svd_conv_name, codebook_form = svd_name + f" + {'+'.join(conv_layers)}, fine-tuned", f"k-means {kmeans_k}, codebook form"
compressed = {  # name: (the model holding the compressed layers, technique, the settings applied)
    "fp32": (base, "baseline", {}),
    f"k-means {kmeans_k}, fine-tuned": (shared, "weight sharing (decompressed)", km_cfg(kmeans_k)),
    codebook_form: (shared, "weight sharing (gather per call)", km_cfg(kmeans_k)),
    f"k-means {small_k}, fine-tuned": (shared_small, "weight sharing (decompressed)", km_cfg(small_k)),
    svd_name + ", fine-tuned": (svd, "SVD", svd_cfg),
    svd_conv_name: (svd_conv, "SVD", {**svd_cfg, "conv_layers": conv_layers, "conv_energy": conv_energy}),
    svd_name + f" + k-means {kmeans_k}": (combo, "SVD then weight sharing (no fine-tune)", {**svd_cfg, "k": kmeans_k}),
}
variants = [compress.as_variant(name, net, x1, technique=technique, config=cfg, dense=name != codebook_form)
            for name, (net, technique, cfg) in compressed.items()]
print(*variants, sep="\n")

# %%
# NBVAL_IGNORE_OUTPUT
workload = variant.Workload("SmallCNN", "Fashion-MNIST classification", f"Fashion-MNIST test ({len(fmnist.test.y):,})")
records = variant.evaluate(variants, workload, data=fmnist.test, inputs={1: x1, 32: x32}, convert=torch.from_numpy,
                           max_time_s=max_time_s, env=env)
for r in records:  # the fp32 model's weight bytes / this variant's stored weight bytes (biases left out)
    r.extra["weights_ratio"] = base_store.fp32_bytes / compress.storage_report(compressed[r.name][0]).stored_bytes
Path(output_dir).mkdir(parents=True, exist_ok=True)
record.save_records(records + block_records, Path(output_dir) / "compression.json")
summaries = report.tables(records, baseline="fp32", extra=["weights_ratio"],
                          columns=["technique", "latency_ms", "p95_ms", "throughput", "speedup", "peak_mem_mb",
                                   "size_mb", "size_ratio", "weights_ratio", "params", "macs", "accuracy",
                                   "acc_delta", "agreement"])
print("Measured on:", bench.environment_line(), "| baseline: the uncompressed fp32 model | size_mb: stored bytes "
      "of all parameters and buffers; size_ratio: fp32 size_mb / this size_mb | weights_ratio: the same for the "
      "weight tensors alone (biases left out) | peak_mem_mb: resident memory one call adds (activations and "
      "workspaces, not the weights) | agreement: top-1 with fp32")
for (_, bs), frame in summaries.items():
    print(f"{workload}, batch {bs}")
    display(frame.round(3))
print(f"efficient blocks, their own comparison ({block_records[0].workload}), from section 3:")
block_summary.round(3)

# %% [markdown]
# **Multiply-adds do not predict latency.** Every record carries its MACs and its measured latency;
# plotted against each other, the points would lie on one line if MACs decided the time:

# %%
# NBVAL_IGNORE_OUTPUT
bmax = max(r.batch_size for r in records)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for ax, recs, title in [(axes[0], [r for r in records if r.batch_size == bmax], f"{workload.model} variants, batch {bmax}"),
                        (axes[1], block_records, f"blocks, batch {block_batch}")]:
    ax.scatter([r.macs / 1e6 for r in recs], [r.latency_ms for r in recs], color="tab:blue", zorder=3)
    for r in recs:
        ax.annotate(r.name.strip(), (r.macs / 1e6, r.latency_ms), xytext=(4, 3), textcoords="offset points", fontsize=7)
    ax.set(xlabel="MACs per input (millions)", ylabel="median latency (ms)", title=title)
    ax.grid(True, alpha=0.3)
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
km, sv = f"k-means {kmeans_k}, fine-tuned", svd_name + ", fine-tuned"
summary = summaries[str(workload), bmax]  # accuracy is the same at every batch size
by_name = {r.name: r for r in records if r.batch_size == bmax}
claims.faster(f"{sv} is faster than fp32 at batch {bmax} ({summary.loc['fp32', 'macs'] / summary.loc[sv, 'macs']:.2f}x "
              "fewer MACs)", by_name[sv], by_name["fp32"], depends=("cores", "avx512"));
km_ratio = by_name["fp32"].latency_ms / by_name[km].latency_ms
claims.check(f"{km} (decompressed) runs within 10 % of fp32's latency at batch {bmax}", holds=abs(km_ratio - 1) <= 0.10,
             evidence=f"{by_name[km].latency_ms:.3f} vs {by_name['fp32'].latency_ms:.3f} ms: {km_ratio:.2f}x",
             depends=("cores",));
svd_param_ratio = layer_params(base, svd_layers) / layer_params(svd, svd_layers)
checks = [
    (f"k-means {kmeans_k}: stored weights >= 6x smaller than fp32", store.ratio, 6.0, "x"),
    (f"k-means {kmeans_k}: accuracy drop after fine-tuning <= 1 point", -summary.loc[km, "acc_delta"], 1.0, "points"),
    (f"SVD on {'+'.join(svd_layers)}: >= 2x fewer parameters in them", svd_param_ratio, 2.0, "x"),
    (f"SVD on {'+'.join(svd_layers)}: accuracy drop after fine-tuning <= 1 point", -summary.loc[sv, "acc_delta"], 1.0, "points"),
]
for label, value, bound, unit in checks:
    claims.check(label, holds=bool(value >= bound if unit == "x" else value <= bound),
                 evidence=f"measured {value:.2f} {unit}" + (f" on {len(fmnist.test.y):,} test images" if unit == "points"
                                                            else " (counted from the weights)"), depends=())

# %% [markdown]
# **Where the targets stand.** The target is k-means with 16 clusters to store the weights at
# least 6x smaller than fp32 with at most 1 point of accuracy lost after fine-tuning, and for SVD on
# the large Linear layers to cut their parameters at least 2x within 1 point after fine-tuning. The
# cell above prints each as a claim with its measured value. The storage ratio is arithmetic
# (4-bit indices: at most 8x, less the codebooks); the accuracy figures come from short fine-tunes
# on `finetune_samples` images and move by a few hundredths of a point between machines. Read the
# tables' speed-ups with the same care as section 3's: weight sharing is a storage win only (the
# decompressed model runs the same fp32 kernels, so expect no speed-up), and the factorized `fc1`
# saves multiply-adds in a layer that is a small part of this CNN's time, so expect little; the
# two speed claims above say what this machine measured.
#
# ## Exercises
# **1.** Write `shared_storage_bytes(n_weights, k)`: the bytes one k-means-shared tensor needs, with
# indices at `ceil(log2 k)` bits packed into whole bytes and a `k`-entry fp32 codebook.

# %%
def shared_storage_bytes(n_weights, k):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_shared_storage_bytes(shared_storage_bytes);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# import math
#
# def shared_storage_bytes(n_weights, k):
#     bits = (k - 1).bit_length()          # ceil(log2 k), and 0 for k = 1
#     return math.ceil(n_weights * bits / 8) + 4 * k
# ```
# </details>
#
# **2.** Write `low_rank(weight, rank)`: return `(A, B)`, shapes `(out, rank)` and `(rank, in)`,
# whose product is the best rank-`rank` approximation of `weight`.

# %%
def low_rank(weight, rank):
    # YOUR CODE HERE
    raise NotImplementedError


exercises.check_low_rank(low_rank);

# %% [markdown]
# <details><summary>Reference solution</summary>
#
# ```python
# def low_rank(weight, rank):
#     U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
#     return U[:, :rank] * S[:rank], Vh[:rank]
# ```
# (`compress.factorize_linear` splits `sqrt(S)` between the two factors instead, which keeps
# their scales alike for fine-tuning; the product is the same.)
# </details>
#
# **3.** (Open) Re-run with `-p svd_layers '["fc1", "fc2"]'`. `fc2` is 128 → 10: how many of its
# weights can a factorization save at best, and is it worth a second kernel call?
#
# **4.** (Open) Re-run with `-p block_channels 16` and `-p block_channels 256`. How does the
# depthwise-separable block's `speedup / MAC saving` change with the width, and why?
