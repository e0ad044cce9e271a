"""Layer 4, runtimes: where a model runs and how its files are read and written.

- :mod:`.formats`: the one registry of model formats: detect a file's format, load a runner
- :mod:`.model_files`: PyTorch files (state dicts loaded ``weights_only``, ``.pt2`` programs), ONNX files
- :mod:`.gpu`: CUDA variants (fp16 autocast, CUDA graphs) with the reason when there is no GPU
- :mod:`.torch_engineering`: train-mode BatchNorm drift, compiled-graph kernel counts, data feeding,
  autocast training, one process per GPU
- :mod:`.onnxrt`: ONNX export, ONNX Runtime sessions and runners, ORT quantization
- :mod:`.tflow`: TensorFlow, Keras, SavedModel, TFLite/LiteRT and tensorflow-model-optimization
- :mod:`.trt_engines`: TensorRT engines (optional; every use is guarded)

Module names avoid ``io``, ``onnx``, ``tf`` and ``tensorrt`` so that ``from optkit.runtimes import
onnxrt`` never hides the package a learner imports beside it.
"""
