"""CRISP pruning: the sparsity patterns, the SR-STE parametrization, the pruner, the API and the CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from datafree.cli import main
from datafree.errors import DatafreeError
from datafree.io.safetensors import load_safetensors
from datafree.prune import CRISP, CRISPConfig, gemm_view, is_nm, nm_mask
from datafree.prune.pipeline import mac_counts, prune, storage
from datafree.prune.sparsity import Masked, block_mask, block_scores, from_gemm_view, pattern_bits
from datafree.synthesis import TeacherInverter
from tests.tiny import tiny_cnn, trained_tiny_teacher

TINY = "tests/tiny.py:tiny_cnn"


def _task(n: int = 400, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiny teacher's task (tests/tiny.py): class c < 3 has channel c bright, class 3 is dim."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.5
    x[y < 3, y[y < 3]] += 0.5
    return x, y


def test_gemm_view_round_trip_puts_input_channels_fastest():
    w = torch.randn(8, 12, 3, 3)
    g = gemm_view(w)
    assert g.shape == (8, 108)
    assert torch.equal(g[2, :12], w[2, :, 0, 0])  # the first 12 columns: every input channel at tap (0, 0)
    assert torch.equal(from_gemm_view(g, w.shape), w)


def test_nm_mask_is_exactly_2_of_4_along_input_channels_and_keeps_the_best():
    score = torch.rand(16, 8, 3, 3)
    mask = nm_mask(score, 2, 4)
    groups = gemm_view(mask).reshape(-1, 4)
    assert torch.equal(groups.sum(1), torch.full((groups.shape[0],), 2.0))
    s = gemm_view(score).reshape(-1, 4)
    kept_min = torch.where(groups.bool(), s, torch.inf).min(1).values
    dropped_max = torch.where(groups.bool(), -torch.inf, s).max(1).values
    assert bool((kept_min >= dropped_max).all())
    assert is_nm(score * mask, 2, 4)
    assert not is_nm(score, 2, 4)


def test_block_mask_removes_whole_blocks_and_balances_rows():
    score = torch.rand(32, 16, 3, 3)  # GEMM view 32 x 144: 2 block-rows x 9 block-columns of 16
    scores = block_scores(score, 16)
    assert scores.shape == (2, 9)
    mask = block_mask(scores, 4, 16, score.shape)
    tiles = gemm_view(mask).reshape(2, 16, 9, 16)
    per_block = tiles.sum((1, 3))
    assert set(per_block.unique().tolist()) <= {0.0, 256.0}  # all or nothing
    assert torch.equal((per_block > 0).sum(1), torch.tensor([4, 4]))  # the same count in every block-row
    best = scores.topk(4, 1).indices.sort(1).values
    assert torch.equal((per_block > 0).nonzero()[:, 1].view(2, 4), best)


def test_srste_gradient_passes_through_and_decays_pruned_weights():
    conv = nn.Conv2d(4, 4, 1, bias=False)
    mask = (torch.rand_like(conv.weight) > 0.5).float()
    parametrize.register_parametrization(conv, "weight", Masked(mask, decay=0.1))
    w = conv.parametrizations.weight.original
    x = torch.randn(2, 4, 3, 3)
    conv(x).sum().backward()
    expect = x.sum((0, 2, 3)).view(1, 4, 1, 1).expand_as(w)  # d(sum of outputs)/dW[o, i] = sum of input i
    assert torch.allclose(w.grad, expect + 0.1 * (1 - mask) * w.detach(), atol=1e-5)
    assert torch.equal(conv.weight, w.detach() * mask)


def test_teacher_inverter_targets_only_the_chosen_classes():
    inv = TeacherInverter(tiny_cnn(), 4)
    inv.target_classes = torch.tensor([1, 3])
    t = inv.balanced_targets(10)
    assert set(t.tolist()) == {1, 3} and (t == 1).sum() == 5
    for h in inv.hooks:
        h.remove()


def _crisp(**kw) -> CRISPConfig:
    base = {"classes": [0, 1], "block": 8, "block_sparsity": 0.5, "steps": 2, "iterations": 15, "batch_size": 32,
            "lr": 0.002}
    return CRISPConfig(**{**base, **kw})


def test_crisp_yields_the_hybrid_pattern_and_keeps_the_user_classes():
    torch.manual_seed(0)
    teacher = trained_tiny_teacher()
    x, y = _task()
    user = y < 2
    pruned, hist = CRISP(_crisp()).prune(copy.deepcopy(teacher), teacher, x[user][:128], progress=False)
    assert not any(parametrize.is_parametrized(m) for m in pruned.modules())  # masks baked in
    conv1, conv2, fc = pruned[0], pruned[3], pruned[7]
    assert bool((conv1.weight != 0).all())  # the first layer (3 input channels) stays dense
    assert is_nm(conv2.weight, 2, 4) and is_nm(fc.weight, 2, 4)
    tiles = (gemm_view(conv2.weight) != 0).reshape(1, 8, 9, 8).sum((1, 3))  # 8x8 blocks of conv2's 8 x 72
    assert int((tiles == 0).sum()) >= 4  # half of the 9 blocks (at least) removed
    assert [h["phase"] for h in hist] == [0, 1, 2, 3] and all("elapsed_s" in h and "loss" in h for h in hist)
    assert hist[-1]["block_sparsity"] >= 0.44 and hist[1]["pruned_layer_density"] == 0.5
    with torch.no_grad():
        acc = (pruned(x[user]).argmax(1) == y[user]).float().mean().item()
    assert acc >= 0.9, acc


def test_crisp_budget_covers_the_method_not_the_evaluation():
    teacher = trained_tiny_teacher()
    x, y = _task()
    cfg = dataclasses.replace(_crisp(), budget="1s")  # 4 phases of about 0.25 s each

    def slow_eval(m: nn.Module) -> dict:
        time.sleep(0.5)  # a held-out evaluation is reporting, outside the method's clock
        return {}

    t0 = time.perf_counter()
    _, hist = CRISP(cfg).prune(copy.deepcopy(teacher), teacher, x[y < 2][:64], slow_eval, progress=False)
    assert time.perf_counter() - t0 >= 2.0  # the four evaluations ran
    assert 1.0 <= hist[-1]["elapsed_s"] < 1.9, hist[-1]["elapsed_s"]  # the budget, evaluations excluded
    assert all(h["iterations"] >= 1 for h in hist)


def test_crisp_saliency_is_class_aware():
    """The same model pruned for different classes gets different masks; magnitude saliency does not."""
    teacher = trained_tiny_teacher()
    x, y = _task()

    def mask_for(cls: int, saliency: str) -> torch.Tensor:
        torch.manual_seed(0)
        cfg = _crisp(classes=[cls], saliency=saliency, block_sparsity=0.0, steps=1, iterations=10, lr=0.0)
        p, _ = CRISP(cfg).prune(copy.deepcopy(teacher), teacher, x[y == cls][:64], progress=False)
        return p[3].weight != 0

    assert not torch.equal(mask_for(0, "crisp"), mask_for(2, "crisp"))
    assert torch.equal(mask_for(0, "magnitude"), mask_for(2, "magnitude"))


def test_crisp_config_rejects_bad_values():
    with pytest.raises(DatafreeError, match="N:M"):
        CRISPConfig(n=4, m=4)
    with pytest.raises(DatafreeError, match="block_sparsity"):
        CRISPConfig(block_sparsity=1.0)
    with pytest.raises(DatafreeError, match="saliency"):
        CRISPConfig(saliency="random")


def test_mac_counts_and_storage_see_the_zeros():
    m = tiny_cnn()
    dense = mac_counts(m, (3, 8, 8))
    assert dense["dense_macs"] == 8 * 8 * 3 * 8 * 9 + 4 * 4 * 8 * 8 * 9 + 128 * 4
    with torch.no_grad():
        m[3].weight.mul_(nm_mask(m[3].weight.abs(), 2, 4))
    half = mac_counts(m, (3, 8, 8))
    assert half["dense_macs"] == dense["dense_macs"]
    assert half["nonzero_macs"] == dense["dense_macs"] - 4 * 4 * 8 * 8 * 9 // 2
    st = storage(m, 2, 4, 8)
    kept = 8 * 72 // 2
    assert st["compressed_bytes"] == int(4 * (8 * 27 + 128 * 4) + 4 * kept + (2 * kept + 9) / 8)


def test_pattern_bits_counts_kept_slots_indices_and_the_block_map():
    torch.manual_seed(0)
    w = torch.randn(32, 16, 3, 3)  # GEMM view 32 x 144: 2 x 9 blocks of 16
    assert pattern_bits(w, 4) == w.numel() * 4  # no zero: dense
    sp = w * nm_mask(w.abs(), 2, 4)
    g = gemm_view(sp)
    g[:16, :16] = 0  # one whole block removed
    sp = from_gemm_view(g, w.shape)
    values = 17 * 16 * 16 // 2
    assert pattern_bits(sp, 4) == values * 4 + values * 2 + 18
    g[20, 40] = 0  # a zero inside a kept 2:4 slot is still stored
    assert pattern_bits(from_gemm_view(g, w.shape), 4) == values * 4 + values * 2 + 18
    scattered = w * (torch.rand_like(w) > 0.5)  # half zeros, no pattern: dense
    assert pattern_bits(scattered, 4) == w.numel() * 4


def test_pattern_bits_never_counts_fewer_values_than_the_non_zeros():
    torch.manual_seed(0)
    w = torch.randn(8, 16)  # a Linear weight; 2:4 keeps columns 1 and 2 of every group of 4
    w[:, 1::4] += 10
    w[:, 2::4] += 10
    sp = w * nm_mask(w.abs(), 2, 4)
    sp[:2, :2] = 0  # one 2x2 block (of 32) removed: the 2 groups it touches keep values in the next block
    # every one of the 32 groups meets a kept block: 2 values of 8 bits + 2 index bits each, and a 32-bit map
    assert pattern_bits(sp, 8, 2, 4, block=2) == 32 * 2 * (8 + 2) + 32
    blocks_only = w.clone()
    blocks_only[:4, :4] = 0  # no N:M, one of 8 4x4 blocks removed: 7 blocks stored + an 8-bit map
    assert pattern_bits(blocks_only, 8, 2, 4, block=4) == 7 * 16 * 8 + 8


class _ViewNet(nn.Module):
    """Flattens with .view, as many hand-written models do: cannot take channels_last activations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))).relu()
        return self.fc(x.view(x.size(0), -1))


def test_a_model_that_flattens_with_view_evaluates_and_prunes_in_nchw():
    from datafree.evaluate import evaluate

    torch.manual_seed(0)
    model = _ViewNet().eval()
    x, y = _task(64)
    ref = model(x)
    assert evaluate(model, x, y)["n"] == 64
    pruned, hist = CRISP(_crisp(iterations=3, steps=1)).prune(copy.deepcopy(model), model, x, progress=False)
    assert is_nm(pruned.conv2.weight, 2, 4) and len(hist) == 3
    assert pruned.conv2.weight.is_contiguous() and torch.allclose(model(x), ref)  # the teacher is as it came


def test_crisp_rejects_an_empty_or_malformed_budget():
    with pytest.raises(DatafreeError, match="--budget"):
        _crisp(budget="0s")
    with pytest.raises(DatafreeError, match="cannot parse budget"):
        _crisp(budget="ten minutes")


def test_prune_api_writes_a_run_directory(tmp_path):
    teacher = trained_tiny_teacher()
    x, y = _task()
    res = prune(teacher, classes=[0, 1], data=None, eval_data=(x, y), out=str(tmp_path / "p"),
                input_shape=(3, 8, 8), num_classes=4, progress=False, block=8, steps=1, iterations=5,
                samples_per_class=16, lr=0.002)
    run = tmp_path / "p"
    for f in ("config.yaml", "metrics.jsonl", "pruned.safetensors", "report.json", "report.md", "calib.safetensors"):
        assert (run / f).is_file(), f
    rep = json.loads((run / "report.json").read_text())
    assert rep["classes"] == [0, 1] and "synthetic" in rep["data"] and "no real image" in rep["data"]
    assert {"accuracy", "accuracy_among_user_classes", "accuracy_other_classes"} <= set(rep["pruned"])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    sd = load_safetensors(run / "pruned.safetensors")
    fresh = tiny_cnn()
    fresh.load_state_dict(sd)
    assert is_nm(fresh[3].weight, 2, 4)
    assert res.report["sparsity"]["sparsity"] > 0.3
    assert "classes [0, 1]" in (run / "report.md").read_text()


def _npz(path, x: torch.Tensor, y: torch.Tensor) -> str:
    np.savez(path, x=(x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy(), y=y.numpy())
    return str(path)


def test_cli_prune_with_real_data_and_bad_input(tmp_path, capsys):
    w = tmp_path / "t.pt"
    torch.save(trained_tiny_teacher().state_dict(), w)
    x, y = _task()
    data = _npz(tmp_path / "d.npz", x, y)
    common = ["prune", "--model", TINY, "--weights", str(w), "--input-shape", "3,8,8", "--num-classes", "4",
              "--block", "8", "--steps", "1", "--iterations", "5", "--samples-per-class", "16", "--quiet"]
    assert main([*common, "--classes", "2", "--data", data, "--out", str(tmp_path / "r")]) == 0
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["data"].startswith("real") and "classes [2] only" in rep["data"]
    capsys.readouterr()
    assert main([*common, "--classes", "7", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--classes" in err[0]
    assert main([*common, "--classes", "0", "--nm", "2-4", "--out", str(tmp_path / "bad2")]) == 2
    assert "--nm" in capsys.readouterr().err


def test_prune_refuses_a_saved_image_set_of_other_classes(tmp_path, capsys):
    w = tmp_path / "t.pt"
    torch.save(trained_tiny_teacher().state_dict(), w)
    x, y = _task()
    common = ["prune", "--model", TINY, "--weights", str(w), "--input-shape", "3,8,8", "--num-classes", "4",
              "--block", "8", "--steps", "1", "--iterations", "3", "--samples-per-class", "16", "--quiet"]
    data = _npz(tmp_path / "d.npz", x, y)
    assert main([*common, "--classes", "2", "--data", data, "--out", str(tmp_path / "r")]) == 0
    calib = str(tmp_path / "r" / "calib.safetensors")  # 16 real images of class 2, unlabelled
    capsys.readouterr()
    assert main([*common, "--classes", "0,1", "--data", calib, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reads no image" in err[0] and "[0, 1]" in err[0]
    assert main([*common, "--classes", "2", "--data", calib, "--out", str(tmp_path / "ok")]) == 0
    rep = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert "reads 16 of 16 as the user's classes" in rep["data"]


def test_resume_after_any_phase_reproduces_the_uninterrupted_weights():
    teacher = trained_tiny_teacher()
    x, y = _task()
    xu = x[y < 2][:96]
    cfg = _crisp(steps=2, iterations=6)
    states: list[dict] = []
    torch.manual_seed(0)
    full, hist = CRISP(cfg).prune(copy.deepcopy(teacher), teacher, xu, progress=False,
                                  checkpoint=lambda st: states.append(copy.deepcopy(st)))
    assert [s["phase"] for s in states] == [0, 1, 2, 3]
    for st in states[:-1]:  # as if killed right after that phase's checkpoint
        resumed, rhist = CRISP(cfg).prune(copy.deepcopy(teacher), teacher, xu, progress=False, state=st)
        for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
            assert torch.equal(a, b)
        assert [h["loss"] for h in rhist] == [h["loss"] for h in hist]


def test_prune_api_resume_continues_and_refuses_other_settings(tmp_path):
    teacher = trained_tiny_teacher()
    out = str(tmp_path / "p")
    kw = {"classes": [0, 1], "input_shape": (3, 8, 8), "num_classes": 4, "progress": False, "block": 8,
          "steps": 1, "iterations": 4, "samples_per_class": 16, "lr": 0.002}
    first = prune(teacher, out=out, **kw)
    again = prune(teacher, out=out, resume=True, **kw)  # every phase done: nothing left but the report
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert len((tmp_path / "p" / "metrics.jsonl").read_text().splitlines()) == 3
    with pytest.raises(DatafreeError, match="other settings"):
        prune(teacher, out=out, resume=True, **{**kw, "block_sparsity": 0.25})


def test_skip_names_whole_layers_checks_them_and_keeps_the_first_and_last_layer_rules():
    from datafree.prune.crisp import prunable

    model = tiny_cnn()
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    first, last = layers[0], layers[-1]
    _, nm0, blk0 = prunable(model, CRISPConfig(m=4, block=1))
    assert first not in nm0 | blk0 and last in nm0 and last not in blk0
    body = sorted(blk0)[0]
    _, nm, blk = prunable(model, CRISPConfig(m=4, block=1, skip=f"{first},{body}"))  # a command line's string
    assert nm == nm0 - {body} and blk == blk0 - {body}  # skipping the first layer frees no other layer
    _, nm, blk = prunable(model, CRISPConfig(m=4, block=1, skip=[last]))
    assert last not in nm and blk == blk0  # skipping the head does not exempt the layer before it from blocks
    with pytest.raises(DatafreeError, match="skip names 'fc'"):
        prunable(model, CRISPConfig(skip=["fc"]))
