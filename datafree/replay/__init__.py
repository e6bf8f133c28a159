"""Replay against forgetting in data-free distillation.

Registry: name -> (config dataclass, implementation); every implementation follows the ``Replay``
protocol in ``base.py`` and composes with any synthesizer.

- ``none``         the student trains on the newest synthetic samples only;
- ``memory-bank``  MB-DFKD: a bounded bank of past synthetic samples (``memory_bank.py``);
- ``vae``          PRE-DFKD: a VAE learns the stream and regenerates it (``vae.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from datafree.config import make_strategy_config
from datafree.replay.base import NoReplay, Replay, ReplayContext
from datafree.replay.memory_bank import MemoryBank, MemoryBankConfig
from datafree.replay.vae import VAEReplay, VAEReplayConfig


@dataclass
class NoReplayConfig:
    pass


REPLAYS = {
    "none": (NoReplayConfig, NoReplay),
    "memory-bank": (MemoryBankConfig, MemoryBank),
    "vae": (VAEReplayConfig, VAEReplay),
}


def make_replay_config(name: str, **overrides) -> NoReplayConfig | MemoryBankConfig | VAEReplayConfig:
    return make_strategy_config(REPLAYS, "replay", name, overrides)


def build_replay(name: str, cfg: NoReplayConfig | MemoryBankConfig | VAEReplayConfig, ctx: ReplayContext) -> Replay:
    return REPLAYS[name][1](cfg, ctx)


__all__ = ["REPLAYS", "MemoryBank", "MemoryBankConfig", "NoReplay", "NoReplayConfig", "Replay", "ReplayContext",
           "VAEReplay", "VAEReplayConfig", "build_replay", "make_replay_config"]
