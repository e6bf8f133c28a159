"""Model inversion: turn a frozen teacher into synthetic training images.

Registry: name -> (config dataclass, implementation).  Every implementation follows the
``Synthesizer`` protocol in ``base.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from datafree.config import make_strategy_config
from datafree.synthesis.base import SynthBatch, Synthesizer, TeacherInverter
from datafree.synthesis.generator import GeneratorConfig, GeneratorSynthesizer
from datafree.synthesis.pixel import PixelConfig, PixelSynthesizer
from datafree.synthesis.pool import SamplePool


@dataclass
class NoSynthConfig:
    """``none``: no inversion at all - the student learns from the guide samples only (the
    condensed-only / few-shot-only baseline)."""


class NoSynthesizer:
    supports_guide = False  # makes nothing to guide; the engine feeds the guide samples to the student

    def __init__(self, cfg: NoSynthConfig, inverter: TeacherInverter, input_shape: tuple[int, ...]) -> None:
        self.cfg, self.guide = cfg, None

    def synthesize(self, student, adversarial: bool = True) -> SynthBatch:
        raise RuntimeError("the 'none' synthesizer makes no samples")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


SYNTHESIZERS = {
    "generator": (GeneratorConfig, GeneratorSynthesizer),
    "pixel": (PixelConfig, PixelSynthesizer),
    "none": (NoSynthConfig, NoSynthesizer),
}


def make_config(name: str, **overrides) -> GeneratorConfig | PixelConfig | NoSynthConfig:
    return make_strategy_config(SYNTHESIZERS, "synthesizer", name, overrides)


def build_synthesizer(name: str, cfg: GeneratorConfig | PixelConfig | NoSynthConfig, inverter: TeacherInverter,
                      input_shape: tuple[int, ...]) -> Synthesizer:
    return SYNTHESIZERS[name][1](cfg, inverter, input_shape)


__all__ = ["SYNTHESIZERS", "GeneratorConfig", "GeneratorSynthesizer", "PixelConfig", "PixelSynthesizer",
           "SamplePool", "SynthBatch", "Synthesizer", "TeacherInverter", "build_synthesizer", "make_config"]
