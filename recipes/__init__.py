"""Built-in YAML recipes, resolvable by name (``--recipe synthetic-tiny``)."""
