"""Dataset condensation: the data owner's side - a few synthetic images per class distilled from real
data, which a user can then release instead of the data (and datafree can use to guide inversion)."""

from datafree.condense.dm import DMConfig, condense

__all__ = ["DMConfig", "condense"]
