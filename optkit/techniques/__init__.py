"""Layer 3, techniques: what changes a model (:mod:`.quantize`, :mod:`.prune`, :mod:`.distill`,
:mod:`.compress`). Imports from :mod:`optkit.core` and :mod:`optkit.data` only; runtimes, serving
and the capstone build on these.
"""
