"""Condensation (DM + DSA), the guide's discriminator, guided / naive-mix / condensed-only distillation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import datafree
from datafree.condense import DMConfig, IDMConfig, condense
from datafree.data import ImageSet, load_npz, save_npz
from datafree.data.dsa import dsa
from datafree.errors import DatafreeError
from datafree.synthesis import TeacherInverter
from datafree.synthesis.guide import Guide, GuideConfig
from tests.tiny import tiny_cnn, trained_tiny_teacher

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (3, 8, 8)


def _real(n_per_class: int = 40, seed: int = 0) -> ImageSet:
    """The tiny teacher's task as a labelled image set: class c < 3 has channel c bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat_interleave(n_per_class)
    x = torch.rand(len(y), *SHAPE, generator=g) * 0.5
    x[y < 3, y[y < 3]] += 0.5
    return ImageSet((x * 255).round().to(torch.uint8), y, ["r", "g", "b", "dark"])


def test_dsa_is_siamese_with_a_seed_and_differentiable():
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    for seed in range(12):  # covers every transformation
        a, b = dsa(x, seed=seed), dsa(x.detach().clone(), seed=seed)
        assert torch.allclose(a, b) and a.shape == x.shape
    dsa(x, "color_crop_rotate").sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError):
        dsa(x, "wobble")


def test_condensation_loss_decreases_and_keeps_the_npz_format(tmp_path):
    data = _real()
    syn, hist = condense(data, DMConfig(ipc=2, iterations=60, batch_real=16, width=32, depth=2, lr=10.0, bf16=False,
                                        init="noise"), progress=False)
    first = sum(h["loss"] for h in hist[:10]) / 10
    last = sum(h["loss"] for h in hist[-10:]) / 10
    assert last < 0.5 * first
    assert syn.x.dtype == torch.uint8 and syn.x.shape == (8, *SHAPE) and syn.y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    save_npz(syn, tmp_path / "c.npz")  # npz round trip: the ../shared format
    back = load_npz(tmp_path / "c.npz")
    assert torch.equal(back.x, syn.x) and torch.equal(back.y, syn.y) and back.class_names == syn.class_names
    with pytest.raises(DatafreeError, match="fewer than ipc"):
        keep = torch.tensor([0, 40, 41, 80, 81, 120, 121])  # class 0 has a single image
        condense(ImageSet(data.x[keep], data.y[keep]), DMConfig(ipc=2, iterations=1), progress=False)


@pytest.mark.parametrize("ipc", [1, 2])
def test_idm_trains_its_queue_and_makes_images_its_nets_read_as_their_class(ipc):
    """IDM (Zhao et al. 2023): the embedding nets come from a FIFO queue trained on the real data (it fills to
    ``queue``, a fresh net every ``net_every`` iterations, and its nets learn the task); the class-aware term
    makes the images classified as their class by those nets - from noise, where DM's random nets give no
    class signal; at ipc 1 the real side is the easy share of each batch."""
    torch.manual_seed(0)
    cfg = IDMConfig(ipc=ipc, iterations=80, batch_real=16, width=32, depth=2, lr=1.0, bf16=False, init="noise",
                    queue=4, net_every=10, net_steps=2, net_batch=64, net_lr=0.05)
    syn, hist = condense(_real(), cfg, progress=False)
    assert all(h["nets"] == 4 for h in hist)  # 3 to start, one more at iteration 1, then full
    assert max(h["net_acc"] for h in hist[-10:]) > 0.8  # the queued nets learn the task
    trained = [h for h in hist[40:] if h["embed_acc"] > 0.4]  # iterations that drew a net in training
    assert len(trained) >= 3 and sum(h["syn_acc"] for h in trained) / len(trained) > 0.95  # it reads them right
    assert all(h["ce"] == 0.0 for h in hist if h["embed_acc"] == 0.0)  # an untrained net adds no class term
    assert syn.x.shape == (4 * ipc, *SHAPE) and syn.x.dtype == torch.uint8
    with pytest.raises(DatafreeError, match="easy_share"):
        IDMConfig(easy_share=0)


def test_idm_queue_is_fifo():
    from datafree.condense.idm import ImprovedDM

    data = _real(4)
    xn = data.float()
    idx = [torch.nonzero(data.y == c).flatten() for c in range(4)]
    obj = ImprovedDM(IDMConfig(ipc=1, queue=4, net_every=10, width=8, depth=1), xn, idx, 4, False)
    first = list(obj.nets)
    for _ in range(25):  # fresh nets at calls 1, 11 and 21
        obj.embedder()
    assert len(obj.nets) == 4 and first[0] not in obj.nets and first[1] not in obj.nets and first[2] in obj.nets


def test_condense_api_takes_a_method_and_refuses_an_unknown_one(tmp_path):
    rep = datafree.condense(_real(), ipc=1, iterations=3, out=str(tmp_path / "c"), method="idm", batch_real=8,
                            width=16, depth=2, net_batch=16, progress=False)
    assert rep["method"] == "idm" and rep["config"]["lr"] == 0.2 and "Improved" in rep["kind"]
    assert "Improved Distribution Matching, 3 iterations" in (tmp_path / "c" / "report.md").read_text()
    with pytest.raises(DatafreeError, match="unknown condensation method 'mtt'"):
        datafree.condense(_real(), ipc=1, iterations=1, out=str(tmp_path / "d"), method="mtt", progress=False)
    with pytest.raises(DatafreeError, match="condense has no option 'queue'"):  # an IDM option under DM
        datafree.condense(_real(), ipc=1, iterations=1, out=str(tmp_path / "e"), queue=3, progress=False)
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


@pytest.mark.parametrize("method", ["dm", "idm"])
def test_condense_cli_writes_a_run_dir(tmp_path, method):
    save_npz(_real(), tmp_path / "real.npz")
    r = subprocess.run([sys.executable, "-m", "datafree", "condense", "--data", str(tmp_path / "real.npz"), "--ipc",
                        "1", "--iterations", "5", "--batch-real", "8", "--method", method, "--out", str(tmp_path / "c"),
                        "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(ROOT),
                                                                                   "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert load_npz(tmp_path / "c" / "condensed.npz").x.shape == (4, *SHAPE)
    rep = json.loads((tmp_path / "c" / "report.json").read_text())
    assert rep["iterations"] == 5 and rep["images"] == 4 and rep["method"] == method
    assert rep["config"]["lr"] == {"dm": 1.0, "idm": 0.2}[method]  # no --lr: the method's own default
    rows = (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["iteration"] == 5  # the last iteration is logged, as report.json's last_loss
    report = (tmp_path / "c" / "report.md").read_text()
    assert "per class: 0: " in report and "![loss.png](loss.png)" in report


def test_discriminator_separates_condensed_features_from_noise():
    torch.manual_seed(0)
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    guide = Guide(GuideConfig(lr_d=2e-3, strategy="flip", noise_target=None), _real(5), inv, "tiny")
    y = torch.arange(4).repeat(16)
    x_noise = torch.rand(64, *SHAPE)
    with torch.no_grad():
        _, f_noise = inv.logits_and_features(x_noise)
    for _ in range(300):
        m = guide.update_discriminator(x_noise, y)
    assert m["guide_d_acc"] > 0.9
    idx = guide._sample_like(y)
    with torch.no_grad():
        _, f_cond = inv.logits_and_features(guide.x[idx])
        real, fake = guide.disc(f_cond, guide.y[idx]), guide.disc(f_noise, y)
    assert float((real > 0).float().mean()) > 0.9 and float((fake < 0).float().mean()) > 0.9
    # the generator's loss is lower for condensed-like features than for noise
    assert guide.align_loss(f_cond, guide.y[idx]) < guide.align_loss(f_noise, y)


def test_classes_without_guide_images_get_no_alignment_or_discriminator_pairs():
    torch.manual_seed(0)
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    data = _real(3)
    keep = data.y < 2  # classes 2 and 3 have no guide image
    guide = Guide(GuideConfig(strategy="flip"), ImageSet(data.x[keep], data.y[keep]), inv, "two classes")
    y = torch.arange(4).repeat(8)
    assert set(guide.y[guide._sample_like(y[y < 2])].tolist()) <= {0, 1}
    assert (guide.y[guide._sample_like(y[y < 2])] == y[y < 2]).all()  # each pair has the asked class
    _, f = inv.logits_and_features(torch.rand(len(y), *SHAPE))
    only_missing = y >= 2
    assert float(guide.align_loss(f[only_missing], y[only_missing])) == 0.0
    assert guide.update_discriminator(torch.rand(int(only_missing.sum()), *SHAPE), y[only_missing]) == {}
    m = guide.update_discriminator(torch.rand(len(y), *SHAPE), y)
    assert set(m) == {"guide_d_loss", "guide_d_acc", "guide_r_t", "guide_noise"}


def test_adaptive_feature_noise_holds_back_a_discriminator_that_memorises_one_image_per_class():
    """ADA's heuristic: with a single guide image per class D's r_t = E[sign(D(real))] runs to 1; the
    controller raises the feature noise while r_t is above the target, and D's r_t stays lower than
    without it; the noise level is part of the checkpoint and 'none' turns it off."""
    other = _real(16, seed=1)  # "synthetic" images from the guide's own classes: only memorising tells them apart
    x_syn, y = other.float(), other.y

    def train(target):
        torch.manual_seed(0)
        inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
        guide = Guide(GuideConfig(lr_d=2e-3, strategy="flip", noise_target=target, noise_step=0.05), _real(1),
                      inv, "one per class")
        r = [guide.update_discriminator(x_syn, y)["guide_r_t"] for _ in range(150)]
        return guide, sum(r[-50:]) / 50

    off, r_off = train(None)
    on, r_on = train(0.6)
    assert off.sigma == 0.0 and r_off > 0.95  # D memorises the four images
    assert 0.0 < on.sigma < on.cfg.noise_max and r_on < r_off - 0.2
    with pytest.raises(DatafreeError, match="noise_target"):
        Guide(GuideConfig(noise_target=1.5), _real(1), on.inv)
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    restored = Guide(GuideConfig(strategy="flip"), _real(1), inv)
    restored.load_state_dict(on.state_dict())
    assert restored.sigma == on.sigma


def test_guided_and_mix_give_the_student_the_same_union_and_a_separate_term_is_opt_in():
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    assert Guide(GuideConfig(), _real(1), inv).cfg.kd_weight == 0.0
    assert Guide(GuideConfig(mode="mix"), _real(1), inv).cfg.kd_weight == 0.0
    assert Guide(GuideConfig(mode="mix", kd_weight=0.5), _real(1), inv).cfg.kd_weight == 0.5
    with pytest.raises(DatafreeError, match="kd_weight"):
        Guide(GuideConfig(kd_weight=-1), _real(1), inv)


def test_teacher_labels_pair_each_guide_image_with_the_teachers_class():
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    data = _real(2)
    wrong = ImageSet(data.x, (data.y + 1) % 4, data.class_names)  # every label off by one class
    with torch.no_grad():
        seen = inv.logits(data.float()).argmax(1)
    given = Guide(GuideConfig(strategy="flip"), wrong, inv, "shifted")
    assert torch.equal(given.y, wrong.y) and given.agree == int((seen == wrong.y).sum())
    assert f"agrees with {given.agree} of the 8 labels" in given.describe()
    ours = Guide(GuideConfig(strategy="flip", labels="teacher"), wrong, inv, "shifted")
    assert torch.equal(ours.y, seen) and ours.agree == given.agree
    assert ours.has_class.tolist() == [bool((seen == c).any()) for c in range(4)]
    y = torch.arange(4).repeat(4)
    y = y[ours.has_class[y]]
    assert torch.equal(ours.y[ours._sample_like(y)], y)  # D's real side: images the teacher puts in the class
    assert "the teacher's class" in ours.describe()
    assert Guide(GuideConfig(mode="mix", labels="teacher"), wrong, inv).counts == wrong.counts()  # report: given
    with pytest.raises(DatafreeError, match="labels"):
        Guide(GuideConfig(labels="oracle"), wrong, inv)


TINY = dict(batch_size=16, kd_steps=4, synth_every=2, channels_last=False, bf16=False)
TINY_SYNTH = dict(batch_size=16, nz=8, ngf=8, g_steps=1)
TINY_PIXEL = dict(batch_size=16, iterations=2)


@pytest.mark.parametrize("mode,synth", [("guided", "generator"), ("mix", "generator"), ("mix", "none"),
                                        ("guided", "pixel")])
def test_guided_mix_and_condensed_only_runs_report_the_data_they_used(tmp_path, mode, synth):
    cond = _real(2)
    save_npz(cond, tmp_path / "cond.npz")
    res = datafree.distill(trained_tiny_teacher(), tiny_cnn(), input_shape=SHAPE, num_classes=4, rounds=2, seed=0,
                           out=str(tmp_path / "run"), synth={"none": {}, "pixel": TINY_PIXEL}.get(synth, TINY_SYNTH),
                           guide=str(tmp_path / "cond.npz"),
                           guide_opts={"mode": mode}, synthesizer=synth, replay="none" if synth == "none" else
                           "memory-bank", eval_data=(torch.rand(8, *SHAPE), torch.arange(8) % 4), progress=False,
                           **TINY)
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert "8 images" in rep["data_used"] and "per class 0: 2, 1: 2, 2: 2, 3: 2" in rep["data_used"]
    assert not rep["data_used"].startswith("none")
    md = (tmp_path / "run" / "report.md").read_text()
    assert "per class" in md
    if mode == "guided":
        assert "guide_d_loss" in res.history[-1] and "loss_align" in res.history[-1]
    if synth == "none":
        assert res.summary["synthetic_images"] == 0


def test_guide_with_wrong_shape_is_one_clear_error(tmp_path):
    save_npz(ImageSet(torch.zeros(4, 3, 5, 5, dtype=torch.uint8), torch.arange(4)), tmp_path / "bad.npz")
    with pytest.raises(DatafreeError, match="guide images have shape"):
        datafree.distill(trained_tiny_teacher(), tiny_cnn(), input_shape=SHAPE, num_classes=4, rounds=1,
                         guide=str(tmp_path / "bad.npz"), synth=TINY_SYNTH, progress=False, **TINY)
    with pytest.raises(DatafreeError, match="--guide"):
        datafree.distill(trained_tiny_teacher(), tiny_cnn(), input_shape=SHAPE, num_classes=4, rounds=1,
                         synthesizer="none", progress=False, **TINY)


@pytest.mark.parametrize("synth", ["generator", "pixel"])
def test_a_guided_synthesizer_updates_the_discriminator_and_checkpoints_it(synth):
    from datafree.synthesis import build_synthesizer, make_config

    def make():
        torch.manual_seed(0)
        inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
        s = build_synthesizer(synth, make_config(synth, **(TINY_PIXEL if synth == "pixel" else TINY_SYNTH)), inv,
                              SHAPE)
        s.guide = Guide(GuideConfig(strategy="flip"), _real(2), inv, "tiny")
        return s

    s = make()
    before = {k: v.clone() for k, v in s.guide.disc.state_dict().items()}
    out = s.synthesize(tiny_cnn())
    assert {"guide_d_loss", "guide_d_acc", "loss_align"} <= set(out.metrics)
    assert any(not torch.equal(before[k], v) for k, v in s.guide.disc.state_dict().items())  # D took a step
    restored = make()
    restored.load_state_dict(s.state_dict())
    for k, v in s.guide.disc.state_dict().items():
        assert torch.equal(restored.guide.disc.state_dict()[k], v)
    assert restored.guide.sigma == s.guide.sigma


def test_a_synthesizer_that_cannot_be_guided_is_one_clear_error(tmp_path, monkeypatch):
    from datafree.synthesis.pixel import PixelSynthesizer

    save_npz(_real(2), tmp_path / "cond.npz")
    monkeypatch.setattr(PixelSynthesizer, "supports_guide", False)
    with pytest.raises(DatafreeError, match="cannot be guided"):
        datafree.distill(trained_tiny_teacher(), tiny_cnn(), input_shape=SHAPE, num_classes=4, rounds=1,
                         synthesizer="pixel", synth=TINY_PIXEL, guide=str(tmp_path / "cond.npz"), progress=False,
                         **TINY)


def test_feature_matching_pulls_each_class_mean_towards_the_guide_and_keeps_the_samples_apart():
    """align=feature_matching (Salimans et al. 2016): nothing to match before D's first update; then
    optimising free synthetic features on L_FA brings each class's mean of D's hidden features to the
    guide's, while the samples of a class stay spread (only the mean is pulled, not every sample)."""
    torch.manual_seed(0)
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    guide = Guide(GuideConfig(align="feature_matching", strategy="flip", noise_target=None), _real(1), inv, "ipc 1")
    y = torch.arange(4).repeat(8)
    _, f0 = inv.logits_and_features(torch.rand(len(y), *SHAPE))
    assert float(guide.align_loss(f0, y)) == 0.0  # no D update yet
    for _ in range(5):
        guide.update_discriminator(torch.rand(len(y), *SHAPE), y)
    assert guide.real_phi.shape == (4, guide.cfg.hidden) and bool(guide.real_seen.all())
    f = f0.clone().requires_grad_(True)
    opt = torch.optim.Adam([f], 0.05)
    first = float(guide.align_loss(f, y))
    for _ in range(200):
        loss = guide.align_loss(f, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(guide.align_loss(f, y)) < 0.05 * first
    with torch.no_grad():
        h0, h = guide.disc.phi(f0), guide.disc.phi(f)
    spread = [float((h[y == c] - h[y == c].mean(0)).pow(2).sum(1).mean()) for c in range(4)]
    spread0 = [float((h0[y == c] - h0[y == c].mean(0)).pow(2).sum(1).mean()) for c in range(4)]
    assert min(s / s0 for s, s0 in zip(spread, spread0)) > 0.3
    restored = Guide(GuideConfig(align="feature_matching", strategy="flip"), _real(1), inv)
    restored.load_state_dict(guide.state_dict())  # the matched class means are part of the checkpoint
    assert torch.equal(restored.real_phi, guide.real_phi)
    with pytest.raises(DatafreeError, match="align"):
        Guide(GuideConfig(align="mmd"), _real(1), inv)


def test_embedding_alignment_pulls_class_mean_embeddings_to_the_guide_without_a_discriminator():
    """align=embedding (DM's objective turned on the generator): no D is built or trained; optimising free images
    on L_FA brings each class's mean embedding, under fresh random ConvNets, to the guide's; a class without guide
    images gets no term; a guided generator call runs with it and reports L_FA."""
    from datafree.synthesis import build_synthesizer, make_config

    torch.manual_seed(0)
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    # one textured image per class (the ConvNet's instance norm is blind to a global colour shift), flat starts
    textures = ImageSet((torch.rand(4, *SHAPE) * 255).round().to(torch.uint8), torch.arange(4))
    guide = Guide(GuideConfig(align="embedding", strategy="flip"), textures, inv, "ipc 1")
    assert guide.guided and guide.disc is None and not guide.needs_features
    y = torch.arange(4).repeat(8)
    x = (0.5 + 0.01 * torch.randn(len(y), *SHAPE)).requires_grad_(True)

    def loss(draws: int = 20) -> float:  # every call draws a new network: average over several
        with torch.no_grad():
            return sum(float(guide.align_loss(None, y, x)) for _ in range(draws)) / draws

    first = loss()
    opt = torch.optim.Adam([x], 0.02)
    for _ in range(150):
        step = guide.align_loss(None, y, x)
        opt.zero_grad()
        step.backward()
        opt.step()
    assert loss() < 0.3 * first
    assert guide.update_discriminator(x.detach(), y) == {}
    no_dark = ImageSet(textures.x[:3], textures.y[:3])  # class 3 has no guide image
    partial = Guide(GuideConfig(align="embedding", strategy="flip"), no_dark, inv)
    assert float(partial.align_loss(None, torch.full((8,), 3), torch.rand(8, *SHAPE))) == 0.0
    adaptive = GuideConfig(align="embedding", strategy="flip", weighting="adaptive", adv=0.5)
    s = build_synthesizer("generator", make_config("generator", **TINY_SYNTH), inv, SHAPE)
    s.guide = Guide(adaptive, textures, inv)
    out = s.synthesize(tiny_cnn())
    assert "loss_align" in out.metrics and "guide_d_loss" not in out.metrics
    state = s.state_dict()["guide"]  # no D to save, but the adaptive weight and its counter
    assert set(state) == {"weight", "measured"} and state["weight"] == out.metrics["align_weight"] != 0.5
    restored = Guide(adaptive, textures, inv)
    restored.load_state_dict(state)
    assert (restored.weight, restored.measured) == (s.guide.weight, s.guide.measured)


@pytest.mark.parametrize("synth", ["generator", "pixel"])
def test_adaptive_weighting_gives_the_alignment_term_its_share_of_the_image_gradient(synth):
    """weighting=adaptive: the first step of every ``adapt_every``-th call sets L_FA's weight so that its
    gradient on the images is ``adv`` times the inversion losses'; fixed weighting keeps ``adv``; the weight
    survives a checkpoint."""
    torch.manual_seed(0)
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    x = torch.rand(8, *SHAPE, requires_grad=True)
    xa = x * 1.0  # a non-leaf, as the synthesizers' augmented views are
    y = torch.arange(4).repeat(2)
    fixed = Guide(GuideConfig(strategy="flip", adv=0.7), _real(2), inv)
    adaptive = Guide(GuideConfig(strategy="flip", weighting="adaptive", adv=0.5, adapt_every=3), _real(2), inv)
    with inv.inverting(momentum=0.0):
        t, f = inv.logits_and_features(xa)
        l_inv = inv.bn_loss() + torch.nn.functional.cross_entropy(t, y)
        l_fa = adaptive.align_loss(f, y)
        g_inv, g_fa = (torch.autograd.grad(v, [xa], retain_graph=True)[0].norm() for v in (l_inv, l_fa))
        assert fixed.align_weight(l_inv, l_fa, xa) == 0.7
        w = adaptive.align_weight(l_inv, l_fa, xa)
        assert w == pytest.approx(0.5 * float(g_inv) / (float(g_fa) + 1e-4), rel=1e-5)
        assert w != 0.5
        # within adapt_every calls the weight is kept, whatever the losses
        assert adaptive.align_weight(10 * l_inv, l_fa, xa) == w
        assert adaptive.align_weight(10 * l_inv, l_fa, xa) == w
        assert adaptive.align_weight(10 * l_inv, l_fa, xa) == pytest.approx(10 * w, rel=1e-4)  # measured anew
    restored = Guide(GuideConfig(strategy="flip", weighting="adaptive", adv=0.5, adapt_every=3), _real(2), inv)
    restored.load_state_dict(adaptive.state_dict())
    assert (restored.weight, restored.measured) == (adaptive.weight, adaptive.measured)
    with pytest.raises(DatafreeError, match="weighting"):
        Guide(GuideConfig(weighting="auto"), _real(2), inv)
    # a synthesizer reports the weight it used
    from datafree.synthesis import build_synthesizer, make_config

    torch.manual_seed(0)
    inv = TeacherInverter(trained_tiny_teacher(), 4, bf16=False)
    s = build_synthesizer(synth, make_config(synth, **(TINY_PIXEL if synth == "pixel" else TINY_SYNTH)), inv, SHAPE)
    s.guide = Guide(GuideConfig(strategy="flip", weighting="adaptive", adv=0.5), _real(2), inv)
    out = s.synthesize(tiny_cnn())
    assert out.metrics["align_weight"] == s.guide.weight != 0.5


def test_guide_options_are_checked_like_the_other_strategies_and_take_none_from_a_command_line():
    from datafree.distill.engine import DistillConfig, method_configs

    cfg = method_configs(DistillConfig(guide="g.npz", guide_opts={"noise_target": "none", "ratio": 1}))["guide"]
    assert cfg.noise_target is None and cfg.ratio == 1.0 and isinstance(cfg.ratio, float)
    with pytest.raises(DatafreeError, match="the guide has no option 'ratoi'"):
        method_configs(DistillConfig(guide="g.npz", guide_opts={"ratoi": 0.2}))
    with pytest.raises(DatafreeError, match="'ratio' must be float"):
        method_configs(DistillConfig(guide="g.npz", guide_opts={"ratio": "none"}))  # not None-able: no conversion
