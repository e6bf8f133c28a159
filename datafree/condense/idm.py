"""Improved Distribution Matching (Zhao, Li, Qin & Yu, "Improved Distribution Matching for Dataset
Condensation", CVPR 2023), on top of DM (``datafree.condense.dm``).

DM embeds with randomly initialised networks, whose features do not tell the classes apart; at one image per
class its images drift into texture the teacher reads as other classes (``dm.py``'s docstring).  IDM keeps DM's
loop and loss and changes two things (the paper's Secs. 4.2-4.3, as its reference code runs CIFAR-10):
1. *Efficient and enriched model sampling*: the embedding net of an iteration is drawn from a FIFO queue of
   ConvNets that are being trained on the real data (SGD, lr ``net_lr``, momentum 0.9, weight decay 5e-4,
   unaugmented batches of ``net_batch``): after every image step ``net_steps`` training steps go to one random
   queued net, and every ``net_every`` iterations a fresh net joins (the oldest leaves once ``queue`` are in).
   So the embeddings come from semi-trained nets of every age, whose features carry class information.
2. *Class-aware distribution regularisation*: the loss adds  ce_weight * acc(net) * CE(net(A(S_c)), c)  per
   class, acc(net) being the net's running accuracy on its own training batches in percent, as the reference
   weighs it, so an untrained net adds nothing.  At one image per class the term acts only on the images the
   net misclassifies, and the real side of the match keeps the ``easy_share`` of each class's batch with the
   lowest CE under the net (the reference's ipc-1 setting: 2,560 of 5,000).
The loss is  sum_c || mean psi(A(R_c)) - mean psi(A(S_c)) ||^2 + regulariser, one SGD step (lr 0.2, the
reference's, momentum 0.5) on all classes at once.

Deviations, for a 2-core CPU: the queue holds ``queue`` = 10 nets (reference 100), a fresh one every 50
iterations (reference 5) and ``net_steps`` = 2 training steps per iteration (reference 2 nets x 10), so a net
lives 500 iterations and reaches about 100 steps, the reference's age range, with a tenth of its training work;
the image step covers all classes at once (the reference steps after each class); a net's accuracy is an
exponential moving average (0.9) of its batch accuracy, not a meter reset every 100 iterations.  The
partitioning-and-expansion augmentation (Sec. 4.1: four half-size images in one) is left out: it changes what
an image of the npz means, and the guide and student read each stored image as one image.

Measured (CIFAR-10 train.npz, ipc 1, 25 minutes, bf16 machine: 621 iterations of 2.4 s): the queued nets read
the images as their classes (0.9-1.0 under nets of running accuracy 0.29-0.54), the resnet56 teacher reads 1 of
10 (DM's set: 0 of 10), and the images stay DM's tiled 8-pixel texture (19 % of pixels clipped, DM's 49 %): one
image matched to a class mean over the flattened 4 x 4 embedding map tiles whichever nets embed it.  At ipc 10
(555 iterations in 25 minutes) the teacher reads 96 of 100 (DM's set: 70 of 100), with 3.3 % of pixels clipped.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from datafree.condense.dm import OBJECTIVES, DistributionMatching, DMConfig
from datafree.errors import DatafreeError
from datafree.models.convnet import ConvNet


@dataclass
class IDMConfig(DMConfig):
    TITLE: ClassVar[str] = "Improved Distribution Matching"
    lr: float = 0.2  # the reference's image lr (DM: 1)
    ce_weight: float = 0.5  # the class-aware regulariser's weight (per percent of the net's accuracy)
    queue: int = 10  # semi-trained nets kept (reference 100)
    net_every: int = 50  # iterations between fresh nets (reference 5)
    net_steps: int = 2  # training steps per iteration, on one random queued net
    net_lr: float = 0.01
    net_batch: int = 256
    easy_share: float = 0.5  # ipc 1: the share of each real batch, lowest CE first, that is matched

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.queue < 1 or self.net_every < 1 or self.net_batch < 1 or self.net_lr <= 0 \
                or not 0 < self.easy_share <= 1:
            raise DatafreeError(f"IDM needs queue, net_every and net_batch >= 1, net_lr > 0 and 0 < easy_share <= 1, "
                                f"got queue={self.queue}, net_every={self.net_every}, net_batch={self.net_batch}, "
                                f"net_lr={self.net_lr}, easy_share={self.easy_share}")


class _QueuedNet:
    def __init__(self, net: ConvNet, lr: float) -> None:
        self.net = net
        self.opt = torch.optim.SGD(net.parameters(), lr, momentum=0.9, weight_decay=5e-4)
        self.acc = 0.0  # running accuracy on its training batches (fraction)
        self.steps = 0


class ImprovedDM(DistributionMatching):
    """DM's objective with embeddings from a queue of semi-trained nets and the class-aware CE regulariser."""

    def __init__(self, cfg: IDMConfig, xn: torch.Tensor, idx: list[torch.Tensor], num_classes: int,
                 bf16: bool) -> None:
        super().__init__(cfg, xn, idx, num_classes, bf16)
        self.y = torch.empty(len(xn), dtype=torch.long)
        for c, i in enumerate(idx):
            self.y[i] = c
        self.nets: deque[_QueuedNet] = deque(maxlen=cfg.queue)
        for _ in range(min(3, cfg.queue)):  # the reference starts with three
            self._push()
        self.it = 0
        self.current: _QueuedNet | None = None

    def _push(self) -> None:
        self.nets.append(_QueuedNet(self.new_net(), self.cfg.net_lr))

    def _pick(self) -> _QueuedNet:
        return self.nets[int(torch.randint(len(self.nets), ()))]  # torch's RNG: the seed makes a run repeatable

    def embedder(self) -> ConvNet:
        if self.it % self.cfg.net_every == 0:
            self._push()
        self.it += 1
        self.current = self._pick()
        for p in self.current.net.parameters():
            p.requires_grad_(False)  # the images' step needs no weight gradients
        return self.current.net

    def real_features(self, net: ConvNet, seeds: list[int]) -> torch.Tensor:
        f_real = super().real_features(net, seeds)
        if self.cfg.ipc > 1:
            return f_real
        k, n = self.num_classes, self.n_real  # ipc 1: match the class's easy images, those the net reads best
        with torch.no_grad():
            ce = F.cross_entropy(net.classifier(f_real.flatten(0, 1)), torch.arange(k).repeat_interleave(n),
                                 reduction="none")
        easiest = ce.view(k, n).topk(max(1, math.ceil(self.cfg.easy_share * n)), dim=1, largest=False).indices
        return torch.gather(f_real, 1, easiest.unsqueeze(-1).expand(-1, -1, f_real.shape[-1]))

    def regulariser(self, net: ConvNet, f_syn: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The class-aware term: CE of the images under the embedding net, weighted by its accuracy."""
        cfg = self.cfg
        logits = net.classifier(f_syn)
        ce = F.cross_entropy(logits, ys, reduction="none")
        if cfg.ipc == 1:
            ce = ce * (logits.argmax(1) != ys)  # only the images the net reads as another class
        reg = cfg.ce_weight * 100 * self.current.acc * ce.view(self.num_classes, cfg.ipc).mean(1).sum()  # per class
        return reg, {"ce": round(reg.item(), 4), "embed_acc": round(self.current.acc, 4),
                     "syn_acc": round(float((logits.argmax(1) == ys).float().mean()), 4)}

    def after_step(self) -> dict:
        """``net_steps`` SGD steps on real data for one random queued net."""
        q = self._pick()
        for p in q.net.parameters():
            p.requires_grad_(True)
        for _ in range(self.cfg.net_steps):
            i = torch.randint(len(self.xn), (self.cfg.net_batch,))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                logits = q.net(self.xn[i].contiguous(memory_format=torch.channels_last)).float()
            loss = F.cross_entropy(logits, self.y[i])
            q.opt.zero_grad(set_to_none=True)
            loss.backward()
            q.opt.step()
            q.acc = 0.9 * q.acc + 0.1 * float((logits.argmax(1) == self.y[i]).float().mean())
            q.steps += 1
        return {"nets": len(self.nets), "net_acc": round(q.acc, 4), "net_steps": q.steps}


OBJECTIVES[IDMConfig] = ImprovedDM
