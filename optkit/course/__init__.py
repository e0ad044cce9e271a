"""Layer 7, course: what only the notebooks need. :mod:`.notebook` (parameters, widgets or static
cells, headline figures), :mod:`.curriculum` (``make run`` / ``make test``), :mod:`.nbcheck` (the
portable comparison of executed notebooks) and :mod:`.exercises` (one checker module per notebook,
``exercises.nb02`` for 02_quantization).
"""
