"""Replay: the sample store, the MB-DFKD memory bank, the PRE-DFKD VAE, and their checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import datafree
from datafree.errors import DatafreeError
from datafree.io.budget import parse_bytes
from datafree.io.safetensors import load_safetensors
from datafree.models.vae import ConvVAE
from datafree.replay import MemoryBankConfig, ReplayContext, VAEReplayConfig, build_replay, make_replay_config
from datafree.synthesis import SamplePool, TeacherInverter
from tests.procs import full_and_killed_then_resumed
from tests.tiny import tiny_cnn, trained_tiny_teacher

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 8, 8)


def _ctx(cache: bool = True) -> ReplayContext:
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    return ReplayContext(inv, SHAPE, 4, cache)


def _batch(n: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images whose first pixel encodes their stream index (mod 256), with matching fake logits."""
    x = torch.rand(n, *SHAPE)
    idx = torch.arange(start, start + n)
    x[:, 0, 0, 0] = (idx % 256).float() / 255
    return SamplePool.quantize(x), idx.float()[:, None, None].expand(n, 2, 4).clone()


# -- the store ----------------------------------------------------------------------------------
def test_pool_never_exceeds_capacity_and_is_fifo():
    pool = SamplePool(capacity=10, shape=(1, 2, 2))
    for i in range(7):
        pool.add(torch.full((3, 1, 2, 2), i / 10))
        assert len(pool) <= 10
    assert len(pool) == 10 and pool.count == 21
    x, _ = pool.get(torch.arange(len(pool)))
    assert sorted({round(v, 1) for v in x.flatten().tolist()}) == [0.3, 0.4, 0.5, 0.6]  # oldest evicted first
    x, logits = pool.sample(4)
    assert x.shape == (4, 1, 2, 2) and logits is None


@pytest.mark.parametrize("capacity", [20, 500])  # 20: snapshots replace the chunk log; 500: chunks only
def test_pool_flush_restore_prune_is_exact(tmp_path, capacity):
    torch.manual_seed(0)
    pool = SamplePool(capacity=capacity, shape=SHAPE)
    for step in range(6):
        x, lg = _batch(8, 8 * step)
        if step % 2:  # append (wrapping around when full)
            pool.write(torch.arange(len(pool), len(pool) + 8) % capacity, x, lg)
        else:  # arbitrary slots, one of them written twice: the later sample must win
            pool.write(torch.tensor([0, 1, 0, 2, 3, 4, 5, 6]) % min(capacity, len(pool) + 1), x, lg)
        manifest = pool.flush(tmp_path)
        SamplePool.prune(tmp_path, manifest)
        assert {f.name for f in tmp_path.glob("pool_*.pt")} == set(manifest["files"])
        back = SamplePool.restore(tmp_path, manifest, capacity, SHAPE)
        n = len(pool)
        assert len(back) == n and back.count == pool.count
        assert torch.equal(back.data[:n], pool.data[:n]) and torch.equal(back.logits[:n], pool.logits[:n])
    if capacity == 20:
        assert any("snapshot" in f for f in manifest["files"])


def test_later_write_to_the_same_slot_wins_and_slots_stay_dense():
    pool = SamplePool(capacity=4, shape=(1, 1, 1))
    pool.write(torch.tensor([0, 1, 0]), torch.tensor([[[[0.1]]], [[[0.2]]], [[[0.3]]]]))
    x, _ = pool.get(torch.arange(len(pool)))
    assert len(pool) == 2 and x.flatten().tolist() == pytest.approx([0.3, 0.2], abs=1 / 255)
    with pytest.raises(IndexError):
        pool.write(torch.tensor([3]), torch.zeros(1, 1, 1, 1))  # would leave slot 2 undefined


def test_parse_bytes():
    assert parse_bytes("40MB") == 40_000_000 and parse_bytes("1KiB") == 1024 and parse_bytes(77) == 77
    with pytest.raises(DatafreeError):
        parse_bytes("lots")


# -- memory bank ----------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["reservoir", "fifo"])
def test_bank_never_exceeds_its_capacity(policy):
    torch.manual_seed(0)
    bank = build_replay("memory-bank", MemoryBankConfig(capacity=50, policy=policy), _ctx())
    for step in range(40):
        x, lg = _batch(16, 16 * step)
        bank.observe(x, lg, 0.0)
        fp = bank.footprint()
        assert len(bank.bank) <= 50 and fp["bytes"] <= fp["capacity_bytes"]
    assert len(bank.bank) == 50 and bank.ready
    kept = bank.bank.logits[:50, 0, 0]  # stream indices of the kept samples
    if policy == "fifo":
        assert sorted(kept.tolist()) == list(range(640 - 50, 640))
    else:  # a uniform sample of the whole stream of 640: spread over it, not just the newest
        assert kept.min() < 160 and kept.max() > 480 and 200 < kept.mean() < 440


def test_bank_capacity_in_bytes_counts_pixels_and_cached_logits():
    bank = build_replay("memory-bank", MemoryBankConfig(capacity_bytes=10 * (3 * 64 + 4 * 2 * 4)), _ctx())
    assert bank.capacity == 10 and bank.sample_bytes == 3 * 64 + 32
    for step in range(5):
        bank.observe(*_batch(8, 8 * step), 0.0)
    assert bank.footprint()["bytes"] == 10 * bank.sample_bytes


def test_bank_mix_replays_pixel_blends_of_two_stored_samples_and_caches_no_logits(monkeypatch):
    torch.manual_seed(0)
    cfg = MemoryBankConfig(capacity_bytes=10 * 3 * 64, mix=1.0)  # no logits cached: a sample costs its pixels
    bank = build_replay("memory-bank", cfg, _ctx())
    assert bank.capacity == 10 and bank.sample_bytes == 3 * 64
    for step in range(5):
        bank.observe(*_batch(8, 8 * step), 0.0)
    assert bank.bank.logits is None and bank.footprint()["bytes"] == 10 * 3 * 64
    x, lg = bank.sample(64)
    stored = bank.bank.data[: len(bank.bank)].float() / 255
    assert lg is None and x.shape == (64, *SHAPE) and 0 <= x.min() and x.max() <= 1
    # new images, most of them neither of the two stored samples they blend
    assert ((x[:, None] - stored[None]).abs().amax((2, 3, 4)).amin(1) > 2 / 255).float().mean() > 0.5
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self, shape=(): torch.ones(shape))
    one, _ = bank.sample(5)  # lam = 1: a stored sample itself
    assert all(any(torch.equal(o, e) for e in stored) for o in one)
    with pytest.raises(DatafreeError, match="mix"):
        build_replay("memory-bank", MemoryBankConfig(mix=-1.0), _ctx())


def test_reservoir_is_uniform_over_the_stream():
    torch.manual_seed(1)
    bank = build_replay("memory-bank", MemoryBankConfig(capacity=1000), _ctx())
    for step in range(100):
        bank.observe(*_batch(100, 100 * step), 0.0)
    kept = bank.bank.logits[:, 0, 0]
    first_half = float((kept < 5000).float().mean())
    assert 0.45 < first_half < 0.55 and abs(float(kept.mean()) - 5000) < 300


def test_bank_refresh_policy():
    bank = build_replay("memory-bank", MemoryBankConfig(capacity=1000, add_every=2, add_fraction=0.25), _ctx())
    for step in range(8):
        bank.observe(*_batch(16, 16 * step), 0.0)
    assert len(bank.bank) == 4 * 4  # 4 of the 8 batches, 4 of 16 samples each


def test_bad_replay_options_are_one_clear_error():
    with pytest.raises(DatafreeError, match="unknown replay"):
        make_replay_config("tape")
    with pytest.raises(DatafreeError, match="no option 'size'"):
        make_replay_config("memory-bank", size=3)
    with pytest.raises(DatafreeError, match="policy"):
        build_replay("memory-bank", MemoryBankConfig(policy="lifo"), _ctx())


# -- VAE ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,side", [((3, 32, 32), 16), ((1, 28, 28), 14), ((3, 8, 8), 8), ((3, 32, 32), 4)])
def test_vae_is_sized_for_the_input(shape, side):
    vae = ConvVAE(shape, latent_channels=2, latent_side=side)
    rec, mu, logvar = vae(torch.rand(2, *shape))
    assert vae.latent_shape == (2, side, side) and mu.shape == (2, 2 * side * side) == logvar.shape
    assert rec.shape == (2, *shape) and 0 <= float(rec.min()) and float(rec.max()) <= 1


def test_vae_reconstructs_a_fixed_batch_better_after_training():
    torch.manual_seed(0)
    replay = build_replay("vae", VAEReplayConfig(lr=3e-3, min_updates=1, pool=16, fresh=8), _ctx())
    teacher = replay.ctx.inverter.teacher
    smooth = torch.nn.functional.interpolate(torch.rand(32, 3, 2, 2), size=SHAPE[1:], mode="bilinear")
    x = SamplePool.quantize(smooth)  # structured images a small VAE can learn
    with torch.no_grad():
        t = teacher(x)

    def errors() -> tuple[float, float]:
        replay.vae.eval()
        with torch.no_grad():
            rec, _, _ = replay.vae(x)
            return float((rec - x).abs().mean()), float((teacher(rec) - t).abs().mean())

    pix0, logit0 = errors()
    for _ in range(150):
        m = replay.observe(x, torch.stack([t, t], 1), 0.5)
    pix1, logit1 = errors()
    assert pix1 < 0.6 * pix0 and logit1 < logit0
    assert replay.ready and {"vae_loss", "vae_logit_l1", "vae_kl"} <= m.keys()
    replay.observe(x, torch.stack([t, t], 1), 0.5)  # relabels the stalest codes: all of them for this VAE
    xr, lr = replay.sample(24)  # decoded from the pool, with the teacher's logits for both views
    assert xr.shape == (24, *SHAPE) and lr.shape == (24, 2, 4)
    with torch.no_grad():
        assert torch.allclose(lr[:, 0], teacher(xr), atol=1e-4)
        assert torch.allclose(lr[:, 1], teacher(xr.flip(3)), atol=1e-4)


def test_nudged_latents_give_a_more_balanced_teacher_response():
    torch.manual_seed(0)
    replay = build_replay("vae", VAEReplayConfig(nudge_steps=0), _ctx())

    def spread(steps: int) -> float:
        replay.cfg.nudge_steps, replay.cfg.nudge_lr = steps, 0.2
        torch.manual_seed(3)
        x, _ = replay.generate(256)
        with torch.no_grad():
            p = torch.softmax(replay.ctx.inverter.teacher(x), 1).mean(0)
        return float(-(p * p.log()).sum())  # entropy of the batch-mean prediction

    assert spread(30) > spread(0) + 0.05


def test_vae_latent_pool_is_a_bounded_fifo_of_8bit_codes_with_fresh_logits():
    torch.manual_seed(0)
    replay = build_replay("vae", VAEReplayConfig(pool=8, fresh=3, relabel=2, nudge_steps=1, min_updates=1), _ctx())
    replay.observe(*_batch(8), 0.0)
    first, first_scales = replay.codes.clone(), replay.scales.clone()
    assert first.dtype == torch.int8 and first.shape == (3, replay.vae.latent) and replay.logits.shape == (3, 2, 4)
    assert int(first.abs().max()) == 127  # absmax scaling: each code uses the full 8-bit range
    for i in range(1, 3):
        m = replay.observe(*_batch(8, 8 * i), 0.1)
        assert len(replay.codes) == min(8, 3 * (i + 1))  # never more than ``pool`` codes
    # newest first: the first three codes have moved to the back, the oldest of them gone
    assert torch.equal(replay.codes[-2:], first[:2]) and torch.equal(replay.scales[-2:], first_scales[:2])
    assert 0.0 <= m["replay_relabel_flips"] <= 1.0
    # the fresh codes and the relabelled stalest ones carry logits computed by this VAE
    current = replay.stamps == replay.calls
    assert int(current.sum()) == 3 + 2
    with torch.no_grad():
        x = replay.decode(replay.codes[current], replay.scales[current])
        assert torch.allclose(replay.logits[current, 0], replay.ctx.inverter.teacher(x), atol=1e-4)
        assert torch.allclose(replay.logits[current, 1], replay.ctx.inverter.teacher(x.flip(3)), atol=1e-4)
    xr, _ = replay.sample(5)  # decoded anew, on the 8-bit image grid the pool's samples use
    assert torch.equal(xr, SamplePool.quantize(xr))
    with pytest.raises(DatafreeError, match="fresh"):
        build_replay("vae", VAEReplayConfig(pool=8, fresh=9), _ctx())


def test_4bit_codes_pack_two_to_a_byte_and_round_like_8bit_on_a_coarser_grid():
    from datafree.replay.latent import dequantize_codes, quantize_codes

    torch.manual_seed(0)
    z = torch.randn(16, 64)
    q4, s4 = quantize_codes(z, 4)
    assert q4.dtype == torch.uint8 and q4.shape == (16, 32)
    back = dequantize_codes(q4, s4)
    assert torch.allclose(back.abs().amax(1), z.abs().amax(1))  # absmax scaling: +-7 hit exactly
    assert float((back - z).abs().max()) <= float(s4.max()) / 2 + 1e-6  # round to nearest on the 15-level grid
    levels = torch.unique(torch.round(back / s4))
    assert levels.min() >= -7 and levels.max() <= 7
    q8, s8 = quantize_codes(z)
    assert q8.dtype == torch.int8 and float((dequantize_codes(q8, s8) - z).abs().max()) <= float(s8.max()) / 2 + 1e-6


def test_2bit_codes_are_lloyd_max_levels_four_to_a_byte():
    from datafree.replay.latent import dequantize_codes, quantize_codes

    torch.manual_seed(0)
    z = torch.randn(64, 512) * 1.5
    q, s = quantize_codes(z, 2)
    assert q.dtype == torch.uint8 and q.shape == (64, 128)
    back = dequantize_codes(q, s, 2)
    levels = torch.tensor([-1.5104, -0.4528, 0.4528, 1.5104])
    u = z / s
    nearest = levels[(u[..., None] - levels).abs().argmin(-1)]  # Lloyd-Max: each value to its nearest level
    assert torch.allclose(back, nearest * s)
    mse = float((back - z).pow(2).mean() / z.pow(2).mean())
    assert 0.10 < mse < 0.13  # the Gaussian 2-bit optimum is 0.1175; absmax {-1, 0, 1} would be ~0.3


def test_vae_pool_holds_2bit_codes_and_fp16_logits_in_the_bytes_it_reports():
    torch.manual_seed(0)
    cfg = VAEReplayConfig(codes="encoded", code_bits=2, logit_dtype="float16", pool=12, min_updates=1)
    replay = build_replay("vae", cfg, _ctx())
    for i in range(3):
        replay.observe(*_batch(8, 8 * i), i / 3)
    assert replay.codes.shape == (12, replay.vae.latent // 4) and replay.logits.dtype == torch.float16
    fp = replay.footprint()
    held = sum(t.numel() * t.element_size() for t in (replay.codes, replay.scales, replay.logits, replay.stamps))
    assert held == fp["pool_bytes"] == 12 * (replay.vae.latent // 4 + 4 + 2 * 2 * 4 + 4)
    x, lg = replay.sample(5)
    assert x.shape == (5, *SHAPE) and lg.dtype == torch.float32
    with pytest.raises(DatafreeError, match="logit_dtype"):
        build_replay("vae", VAEReplayConfig(logit_dtype="int8"), _ctx())


def test_vae_encoded_pool_is_a_reservoir_of_the_streams_4bit_encodings():
    torch.manual_seed(0)
    replay = build_replay("vae", VAEReplayConfig(codes="encoded", code_bits=4, pool=12, relabel=3, min_updates=1),
                          _ctx())
    x, lg = _batch(8)
    replay.observe(x, lg, 0.0)
    assert replay.codes.dtype == torch.uint8 and replay.codes.shape == (8, replay.vae.latent // 2)
    # the codes are the stream's own encodings (by the VAE after this step), not prior samples
    from datafree.replay.latent import quantize_codes

    want, scales = quantize_codes(replay.encode(x), 4)
    assert torch.equal(replay.codes, want) and torch.allclose(replay.scales, scales)
    for i in range(1, 40):
        replay.observe(*_batch(8, 8 * i), i / 40)
        assert len(replay.codes) == min(12, 8 * (i + 1)) and replay.offered == 8 * (i + 1)
        if i == 1:
            full = replay.codes.clone()
    assert not torch.equal(replay.codes, full)  # later samples replaced some (reservoir_slots: uniform over the stream)
    # the pool's logits are those of the current VAE for the codes refreshed this call
    current = replay.stamps == replay.calls
    with torch.no_grad():
        xc = replay.decode(replay.codes[current], replay.scales[current])
        assert torch.allclose(replay.logits[current, 0], replay.ctx.inverter.teacher(xc), atol=1e-4)
    fp = replay.footprint()
    assert fp["pool_bytes"] == 12 * (replay.vae.latent // 2 + 4 + 4 * 2 * 4 + 4)
    held = sum(t.numel() * t.element_size() for t in (replay.codes, replay.scales, replay.logits, replay.stamps))
    assert held == fp["pool_bytes"]
    with pytest.raises(DatafreeError, match="codes"):
        build_replay("vae", VAEReplayConfig(codes="stored"), _ctx())
    with pytest.raises(DatafreeError, match="code_bits"):
        build_replay("vae", VAEReplayConfig(code_bits=3), _ctx())


def test_reservoir_slots_keep_a_uniform_sample_of_the_stream():
    from datafree.replay.memory_bank import reservoir_slots

    torch.manual_seed(0)
    hits = torch.zeros(100)
    for _ in range(400):
        store = torch.full((10,), -1)
        for start in range(0, 100, 7):
            n = min(7, 100 - start)
            idx, slots = reservoir_slots(start, 10, n)
            store[slots] = start + idx
        hits[store] += 1
    assert hits.sum() == 4000
    assert hits[:50].sum().item() / 4000 == pytest.approx(0.5, abs=0.05)  # as many old samples kept as new


def test_fitted_prior_tracks_the_mean_and_covariance_of_a_low_rank_stream():
    from datafree.replay.latent import LatentPrior

    torch.manual_seed(0)
    dim, rank = 24, 3
    mean, w = torch.randn(dim), 2 * torch.randn(rank, dim)
    cov = w.T @ w + 0.01 * torch.eye(dim)
    prior = LatentPrior(dim, rank=4, decay=0.9)
    for _ in range(200):
        prior.update(mean + torch.randn(64, rank) @ w + 0.1 * torch.randn(64, dim))
    assert prior.basis.dtype == torch.float16 and prior.basis.shape == (4, dim)
    assert torch.allclose(prior.mean, mean, atol=0.3)
    assert abs(float(prior.total) / float(cov.trace()) - 1) < 0.1
    z = prior.sample(20_000)
    emp = torch.cov(z.T)
    assert torch.allclose(z.mean(0), prior.mean, atol=0.15)
    assert float((emp - cov).norm() / cov.norm()) < 0.15  # the stream's spread, its directions included
    assert abs(float(prior.residual()) - 0.01) < 0.01


def test_vae_nudging_starts_from_the_fitted_prior_once_it_has_seen_a_batch():
    torch.manual_seed(0)
    replay = build_replay("vae", VAEReplayConfig(pool=8, fresh=4, min_updates=100, prior="fitted"), _ctx())
    assert replay.prior.mean is None
    replay.observe(*_batch(8), 0.0)
    assert replay.prior.mean.shape == (replay.vae.latent,)
    z = replay.prior_sample(4096)
    assert torch.allclose(z.mean(0), replay.prior.mean, atol=0.1)
    normal = build_replay("vae", VAEReplayConfig(prior="normal"), _ctx())
    assert normal.prior is None and normal.footprint()["prior_bytes"] == 0
    with pytest.raises(DatafreeError, match="prior"):
        build_replay("vae", VAEReplayConfig(prior="gmm"), _ctx())


def test_vae_nudges_nothing_before_min_updates():
    replay = build_replay("vae", VAEReplayConfig(pool=8, fresh=4, steps=2, min_updates=4), _ctx())
    replay.observe(*_batch(8), 0.0)
    assert replay.codes is None and not replay.ready
    replay.observe(*_batch(8, 8), 0.0)
    assert len(replay.codes) == 4 and replay.ready


def test_vae_footprint_is_reported_in_bytes():
    replay = build_replay("vae", VAEReplayConfig(pool=8, fresh=8, min_updates=1, prior="fitted"), _ctx())
    replay.observe(*_batch(8), 0.0)
    fp = replay.footprint()
    assert fp["weights_bytes"] >= 4 * fp["params"] and 8 * fp["params"] <= fp["optimizer_bytes"] < 9 * fp["params"]
    held = sum(t.numel() * t.element_size() for t in (replay.codes, replay.scales, replay.logits, replay.stamps))
    assert fp["pool_codes"] == 8 and fp["pool_bytes"] == 8 * (replay.vae.latent + 4 + 4 * 2 * 4 + 4) == held
    empty = build_replay("vae", VAEReplayConfig(pool=8, fresh=8), _ctx()).footprint()
    assert empty["pool_codes"] == 0 and empty["pool_bytes"] == fp["pool_bytes"]  # counted at capacity
    held = sum(t.numel() * t.element_size() for t in replay.prior.state().values())
    assert held <= fp["prior_bytes"] == 4 * replay.vae.latent + 2 * 64 * replay.vae.latent + 4  # at full rank
    assert fp["bytes"] == fp["weights_bytes"] + fp["optimizer_bytes"] + fp["pool_bytes"] + fp["prior_bytes"]


def test_vae_default_footprint_fits_the_bytes_of_the_decoded_block_it_replaced():
    ctx = _ctx()
    replay = build_replay("vae", VAEReplayConfig(), ReplayContext(ctx.inverter, (3, 32, 32), 10, True))
    weights = sum(t.numel() * t.element_size() for t in replay.vae.state_dict().values())
    pool = 320 * (2 * 16 * 16 + 4 + 4 * 2 * 10 + 4)
    block = 64 * (3 * 32 * 32 + 4 * 2 * 10)  # the 64 decoded images (uint8) and their logits before
    assert pool <= block and weights == 48_828
    assert replay.prior is None and replay.footprint()["prior_bytes"] == 0  # N(0, I) is the default prior


# -- through the engine: the student batch, resume ------------------------------------------------
TINY = dict(batch_size=16, kd_steps=4, synth_every=2, channels_last=False, bf16=False)
TINY_SYNTH = dict(batch_size=16, nz=8, ngf=8, g_steps=1)


def _distill(out, replay, rounds, resume=False, **opts):
    torch.manual_seed(0)
    return datafree.distill(trained_tiny_teacher(), tiny_cnn(), input_shape=SHAPE, num_classes=4, rounds=rounds,
                            seed=0, out=str(out), resume=resume, synth=TINY_SYNTH, replay=replay, progress=False,
                            replay_opts=opts, deterministic=True, **TINY)


def _replay_snapshot(replay) -> dict:
    if hasattr(replay, "bank"):
        n = len(replay.bank)
        return {"x": replay.bank.data[:n].clone(), "logits": replay.bank.logits[:n].clone(),
                "count": replay.bank.count, "calls": replay.calls}
    def c(t):  # the pool is None before a freeze
        return t.clone() if t is not None else None

    return {**{k: v.clone() for k, v in replay.vae.state_dict().items()}, "codes": c(replay.codes),
            "scales": c(replay.scales), "logits": c(replay.logits), "stamps": c(replay.stamps), "frozen": replay.frozen,
            "updates": replay.updates, "calls": replay.calls, "offered": replay.offered,
            **{f"prior_{k}": v.clone() for k, v in (replay.prior.state() if replay.prior else {}).items()},
            "exp_avg": [s["exp_avg"].clone() for s in replay.opt.state.values()]}


@pytest.mark.parametrize("replay,opts", [("memory-bank", {"capacity": 40}),
                                         ("vae", {"min_updates": 1, "pool": 16, "fresh": 8, "prior": "fitted"}),
                                         ("vae", {"min_updates": 1, "pool": 24, "codes": "encoded", "code_bits": 4}),
                                         # budget-driven: the VAE's cosine lr and its freeze past the resume point
                                         ("vae", {"min_updates": 1, "pool": 24, "codes": "encoded", "code_bits": 4,
                                                  "schedule": "cosine", "freeze": 0.6}),
                                         # blended replays: no cached logits, a live teacher pass, RNG-driven blends
                                         ("vae", {"min_updates": 1, "pool": 24, "codes": "encoded", "code_bits": 4,
                                                  "freeze": 0.3, "mix": 1.0, "ratio": 0.5})])
def test_resume_restores_the_replay_state_exactly(tmp_path, monkeypatch, replay, opts):
    from datafree.distill.engine import DistillConfig, Distiller
    from datafree.models import ModelMeta
    from datafree.run import RunDir

    full = _distill(tmp_path / "full", replay, 4, **opts)
    held = {}
    checkpoint = Distiller._checkpoint

    def interrupt_after_round_2(self):
        checkpoint(self)
        if self.round == 2:
            held.update(_replay_snapshot(self.replay))
            raise KeyboardInterrupt

    monkeypatch.setattr(Distiller, "_checkpoint", interrupt_after_round_2)
    with pytest.raises(KeyboardInterrupt):
        _distill(tmp_path / "part", replay, 4, **opts)
    monkeypatch.undo()
    cfg = DistillConfig(synth=TINY_SYNTH, replay=replay, replay_opts=opts, rounds=4, deterministic=True, **TINY)
    eng = Distiller(trained_tiny_teacher(), tiny_cnn(), ModelMeta(SHAPE, 4), cfg, RunDir(tmp_path / "part"),
                    progress=False)
    assert eng._restore() and eng.round == 2
    back = _replay_snapshot(eng.replay)
    assert back.keys() == held.keys()
    for k, v in held.items():
        if isinstance(v, list):
            assert all(torch.equal(a, b) for a, b in zip(v, back[k])), k
        else:
            assert torch.equal(v, back[k]) if torch.is_tensor(v) else v == back[k], k
    resumed = _distill(tmp_path / "part", replay, 4, resume=True, **opts)
    for k, v in full.student.state_dict().items():
        assert torch.equal(v, resumed.student.state_dict()[k]), k
    rep = json.loads((tmp_path / "part" / "report.json").read_text())
    assert rep["student"]["replay"] == replay and rep["student"]["replay_footprint"]["bytes"] > 0


def test_no_replay_trains_on_the_novel_window_only(tmp_path):
    res = _distill(tmp_path, "none", 2)
    assert res.summary["replayed_images"] == 0 and res.summary["replay_footprint"]["bytes"] == 0


def test_resume_with_another_replay_is_refused(tmp_path):
    _distill(tmp_path, "none", 1)
    with pytest.raises(DatafreeError, match="other settings"):
        _distill(tmp_path, "vae", 2, resume=True)


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "datafree", "distill", "--teacher", "tests/tiny.py:tiny_cnn", "--student",
            "tests/tiny.py:tiny_cnn", "--input-shape", "3,8,8", "--num-classes", "4", "--rounds", "6",
            "--deterministic", "--quiet", "--no-channels-last", "--kd-steps", "30", "--synth-every", "3",
            "--batch-size", "32", "--synth-opt", "batch_size=32", "--synth-opt", "nz=8", "--synth-opt", "ngf=8",
            "--replay", "vae", "--replay-opt", "min_updates=2", "--replay-opt", "pool=32", "--out", str(out), *extra]


def test_vae_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    full, killed = full_and_killed_then_resumed(_cli, tmp_path, kill_after_rows=3)
    a, b = load_safetensors(full / "student.safetensors"), load_safetensors(killed / "student.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_vae_freeze_stops_learning_frees_adam_and_keeps_exact_logits_for_its_encodings(tmp_path):
    torch.manual_seed(0)
    cfg = VAEReplayConfig(codes="encoded", code_bits=4, pool=10, freeze=0.5, min_updates=1, steps=2)
    replay = build_replay("vae", cfg, _ctx())
    for i in range(3):  # learning, no pool yet: the Adam moments and the pool never coexist
        replay.observe(*_batch(8, 8 * i), 0.1 * i)
    assert replay.codes is None and not replay.ready and not replay.frozen and replay.updates == 6
    adam = replay.footprint()["optimizer_bytes"]
    assert adam == sum(8 * p.numel() + 4 for p in replay.vae.parameters())
    replay.observe(*_batch(8, 24), 0.5)
    assert replay.frozen and not replay.opt.state and replay.updates == 6 and len(replay.codes) == 8
    weights = {k: v.clone() for k, v in replay.vae.state_dict().items()}
    for i in range(4, 8):
        replay.observe(*_batch(8, 8 * i), 0.1 * i)
    assert all(torch.equal(v, replay.vae.state_dict()[k]) for k, v in weights.items())
    assert len(replay.codes) == 10 and replay.offered == 40 and replay.ready
    with torch.no_grad():  # every code's cached logits are the teacher's on its decoding, however old the code
        xc = replay.decode(replay.codes, replay.scales)
        assert torch.allclose(replay.logits[:, 0], replay.ctx.inverter.teacher(xc), atol=1e-4)
    fp = replay.footprint()
    assert fp["frozen"] and fp["optimizer_bytes"] == adam
    assert fp["bytes"] == fp["weights_bytes"] + max(adam, fp["pool_bytes"])
    again = build_replay("vae", cfg, _ctx())
    again.load(tmp_path, replay.save(tmp_path))
    assert again.frozen and torch.equal(again.codes, replay.codes)
    again.observe(*_batch(8, 64), 0.9)
    assert all(torch.equal(v, again.vae.state_dict()[k]) for k, v in weights.items())
    with pytest.raises(DatafreeError, match="freeze"):
        build_replay("vae", VAEReplayConfig(freeze=0.5), _ctx())


def test_vae_mix_replays_blends_of_two_codes_with_no_cached_logits(monkeypatch):
    torch.manual_seed(0)
    cfg = VAEReplayConfig(codes="encoded", code_bits=4, pool=10, freeze=0.5, min_updates=1, steps=2, mix=1.0)
    replay = build_replay("vae", cfg, _ctx())
    for i in range(8):
        replay.observe(*_batch(8, 8 * i), 0.1 * i)
    assert replay.frozen and len(replay.codes) == 10 and replay.logits is None and replay.stamps is None
    fp = replay.footprint()  # a code costs its latent and scale: nothing cached, nothing to restamp
    held = sum(t.numel() * t.element_size() for t in (replay.codes, replay.scales))
    assert fp["pool_bytes"] == held == 10 * (replay.vae.latent // 2 + 4)
    x1, lg = replay.sample(64)
    assert lg is None and x1.shape == (64, *SHAPE) and 0 <= x1.min() and x1.max() <= 1
    assert torch.equal(SamplePool.quantize(x1), x1)  # on the pool's 8-bit grid, as every stored sample
    x2, _ = replay.sample(64)
    exact = replay.decode(replay.codes, replay.scales)
    # new images at every call, most of them neither of the two codes they blend (10 codes, 64 draws)
    assert not torch.equal(x1, x2)
    assert ((x1[:, None] - exact[None]).abs().amax((2, 3, 4)).amin(1) > 2 / 255).float().mean() > 0.5
    # lam = 1 gives the code itself: the blends run between the pool's own decodings
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self, shape=(): torch.ones(shape))
    one, _ = replay.sample(5)
    assert all(any(torch.equal(o, e) for e in exact) for o in one)
    with pytest.raises(DatafreeError, match="mix"):
        build_replay("vae", VAEReplayConfig(mix=-1.0), _ctx())


def test_live_replays_get_the_teachers_logits_on_the_view_the_student_sees(tmp_path, monkeypatch):
    from datafree.distill import engine

    seen, inputs = [], []
    kd = engine.kd_loss

    def spy(s, t, *a, **k):
        seen.append((inputs[-1], t.detach().clone()))
        return kd(s, t, *a, **k)

    monkeypatch.setattr(engine, "kd_loss", spy)
    student, teacher = tiny_cnn(), trained_tiny_teacher()
    student.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach().clone()))
    opts = dict(min_updates=1, pool=24, codes="encoded", code_bits=4, freeze=0.3, mix=1.0, ratio=0.5)
    res = datafree.distill(teacher, student, input_shape=SHAPE, num_classes=4, rounds=3, seed=0, out=str(tmp_path),
                           synth=TINY_SYNTH, replay="vae", replay_opts=opts, progress=False, deterministic=True,
                           **TINY)
    assert res.summary["replayed_images"] > 0 and len(seen) == 3 * TINY["kd_steps"]
    teacher.eval()
    with torch.no_grad():  # cached rows (the window, either mirror view) and live rows (the blends) alike
        for x, t in seen:
            assert torch.allclose(teacher(x), t, atol=1e-4)
