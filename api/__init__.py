"""The Python API, the CLI's twin: ``cops.load(PATH)`` → :class:`cops.api.model.Model`
(``predict``, ``evaluate``, ``export``) and ``cops.train`` / ``cops.finetune``
(:mod:`cops.api.training`). Reached as ``cops.load`` etc.; the submodules import on first use.
"""
