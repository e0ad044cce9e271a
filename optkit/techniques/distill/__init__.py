"""Knowledge distillation: train a small student to imitate a large teacher.

What it offers:

- **Soft-target distillation** (Hinton et al., 2015): :func:`kd_loss` is
  ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)``,
  written out term by term (:func:`soft_target_loss` is the first term alone). The ``T^2`` keeps the
  soft term's gradients the same size at every temperature, so ``alpha`` means the same thing
  whatever ``T`` is.
- **Feature distillation** (FitNets-style hints): :class:`FeatureHooks` reads intermediate
  outputs of any model through forward hooks (no special ``forward`` needed), and
  :func:`projection` builds the learned 1x1 conv / linear map that takes the student's width to the
  teacher's when they differ; :func:`feature_loss` is the mean squared error between the two.
- **Self-distillation with an EMA teacher**: :class:`EMATeacher` keeps a ``copy.deepcopy`` of the
  student whose weights follow the student's by an exponential moving average
  (:func:`ema_update`, ``ema = decay * ema + (1 - decay) * weight`` after every step), used as
  the teacher.
- **The trainer**: :func:`train_student` runs any of these (plain cross-entropy, soft targets,
  soft targets + features, EMA self-distillation) with identical initial weights and batch order
  per seed. A frozen teacher's outputs are computed once by :func:`cache_teacher` and looked up
  by example index, so distilling costs little more than training from scratch.
- **Honest comparisons**: :func:`train_seeds` repeats one method over seeds (each seed fixes the
  initial weights and the batch order, the same for every method), :func:`summarize` (mean and spread over seeds) and
  :func:`paired_difference` (the difference between two methods seed by seed, with a 95 %
  confidence interval that says whether it is inside the noise); :func:`train_sweep` trains a
  temperature sweep and an alpha sweep around the main setting, each setting once, and
  :func:`plot_sweep` draws them against the scratch runs.
- :class:`StudentCNN`: a small CNN for Fashion-MNIST (about 106 k parameters, under a quarter of
  the reference ``ResNetCNN``).

Which submodule owns what (import everything from here, ``from optkit.techniques import distill``):
:mod:`.student` (``StudentCNN``), :mod:`.losses` (``kd_loss``, ``soft_target_loss``, the
temperature and alpha checks), :mod:`.features` (``FeatureHooks``, ``projection``,
``feature_loss``), :mod:`.teachers` (``ema_update``, ``EMATeacher``, ``cache_teacher`` and its
``TeacherOutputs``), :mod:`.trainer` (``train_student``, ``Distilled``), :mod:`.experiments`
(``train_seeds``, ``SeedRuns``, ``label_subset``, ``summarize``, ``paired_difference``, ``Difference``, ``plot_runs``),
:mod:`.sweeps` (``train_sweep``, ``Sweep``, ``plot_sweep``).

Taught in 04_knowledge_distillation.
"""
from __future__ import annotations

from optkit.techniques.distill.experiments import (Difference, SeedRuns, label_subset, paired_difference,
                                                   plot_runs, summarize, train_seeds)
from optkit.techniques.distill.features import FeatureHooks, feature_loss, projection
from optkit.techniques.distill.losses import check_alpha, check_temperature, kd_loss, soft_target_loss
from optkit.techniques.distill.student import StudentCNN
from optkit.techniques.distill.sweeps import Sweep, plot_sweep, train_sweep
from optkit.techniques.distill.teachers import EMATeacher, TeacherOutputs, cache_teacher, ema_update
from optkit.techniques.distill.trainer import Distilled, train_student

__all__ = [
    "StudentCNN",
    "check_temperature",
    "check_alpha",
    "soft_target_loss",
    "kd_loss",
    "FeatureHooks",
    "projection",
    "feature_loss",
    "ema_update",
    "EMATeacher",
    "TeacherOutputs",
    "cache_teacher",
    "Distilled",
    "train_student",
    "SeedRuns",
    "train_seeds",
    "label_subset",
    "summarize",
    "Difference",
    "paired_difference",
    "plot_runs",
    "Sweep",
    "train_sweep",
    "plot_sweep",
]
