"""The command-line programs over the package, one module each with its ``main(argv)``.

``tools/NAME.py`` runs ``megatron_redi.commands.NAME`` (so does ``python -m
megatron_redi.commands.NAME``); tests call ``main`` in-process. The trainer
(``python -m megatron_redi.train``), the recipe (``python -m megatron_redi.recipe``) and the converter
(``tools/convert_checkpoint.py``, ``megatron_redi.checkpoint.convert``) keep the places they are
documented at. What stays a script in tools/ drives this checkout itself (its examples/ and other
tools): the benchmarks, the golden values, the sweep, the toy study, the multi-rank check.
"""
