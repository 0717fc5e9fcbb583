"""The Python API, the CLI's twin: ``cops.load(PATH)`` → :class:`cops.api.model.Model`
(``predict``, ``evaluate``, ``export``), ``cops.train`` / ``cops.finetune``
(:mod:`cops.api.training`) and ``cops.import_checkpoint`` (:mod:`cops.api.released`). Reached as
``cops.load`` etc.; the submodules import on first use.
"""
