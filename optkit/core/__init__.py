"""Layer 1, core: the pieces every other layer uses, free of torch, TensorFlow and ONNX Runtime at
import time.

- :mod:`.errors`: ``OptkitError`` and the one validator per kind (``check_int``, ``check_range``, ...)
- :mod:`.files`: the one atomic writer, sizes and hashes of files
- :mod:`.quiet`: the one silencer of library output
- :mod:`.bench`: timing (``measure``, interleaved ``compare``), threads, memory, the environment line
- :mod:`.verify`: parity of outputs (errors, SQNR, agreement) and the one accuracy function
- :mod:`.variant`: ``Variant`` and ``Workload``, and ``evaluate``: verify + time + Records in one call
- :mod:`.record`, :mod:`.report`: the ``Record`` row, its JSON, and tables/plots within one workload
"""
