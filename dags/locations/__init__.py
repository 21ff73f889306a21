"""One code location per team: each module builds its own ``defs`` from its own domain and ``dags.common``.

Locations never import each other, so one team's broken code or setting leaves the others loading.
"""
