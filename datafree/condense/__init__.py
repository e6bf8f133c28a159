"""Dataset condensation: the data owner's side - a few synthetic images per class distilled from real
data, which a user can then release instead of the data (and datafree can use to guide inversion)."""

from datafree.condense.dm import DMConfig, condense
from datafree.condense.idm import IDMConfig

# --method NAME -> its config; the config's class picks the objective (dm.OBJECTIVES)
METHODS: dict[str, type[DMConfig]] = {"dm": DMConfig, "idm": IDMConfig}

__all__ = ["METHODS", "DMConfig", "IDMConfig", "condense"]
