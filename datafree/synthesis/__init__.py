"""Model inversion: turn a frozen teacher into synthetic training images.

Registry: name -> (config dataclass, implementation).  Every implementation follows the
``Synthesizer`` protocol in ``base.py``.
"""

from __future__ import annotations

from dataclasses import fields

from datafree.errors import DatafreeError
from datafree.synthesis.base import SynthBatch, Synthesizer, TeacherInverter
from datafree.synthesis.generator import GeneratorConfig, GeneratorSynthesizer
from datafree.synthesis.pixel import PixelConfig, PixelSynthesizer
from datafree.synthesis.pool import SamplePool

SYNTHESIZERS = {
    "generator": (GeneratorConfig, GeneratorSynthesizer),
    "pixel": (PixelConfig, PixelSynthesizer),
}


def make_config(name: str, **overrides):
    if name not in SYNTHESIZERS:
        raise DatafreeError(f"unknown synthesizer '{name}'; choose one of {', '.join(SYNTHESIZERS)}")
    cls = SYNTHESIZERS[name][0]
    known = {f.name for f in fields(cls)}
    bad = [k for k in overrides if k not in known]
    if bad:
        raise DatafreeError(f"synthesizer '{name}' has no option '{bad[0]}'; options: {', '.join(sorted(known))}")
    return cls(**overrides)


def build_synthesizer(name: str, cfg, inverter: TeacherInverter, input_shape) -> Synthesizer:
    return SYNTHESIZERS[name][1](cfg, inverter, input_shape)


__all__ = ["SYNTHESIZERS", "GeneratorConfig", "GeneratorSynthesizer", "PixelConfig", "PixelSynthesizer",
           "SamplePool", "SynthBatch", "Synthesizer", "TeacherInverter", "build_synthesizer", "make_config"]
