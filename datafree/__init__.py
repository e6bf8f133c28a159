"""datafree: compress a trained image classifier without its training data.

    import datafree
    res = datafree.distill("resnet56", "resnet20", teacher_weights="resnet56.pt", budget="15m")
    res.student, res.history
    datafree.evaluate(model, x, y)   # x: float NCHW in the model's input space
"""

import datafree.omp  # noqa: F401  (first: it sets libgomp's spin count before torch loads)

# isort: split
import datafree.condense  # noqa: F401  (loaded first: the function below keeps the name)
from datafree.api import condense, distill, evaluate_dataset, export_model, prune, quantize, sweep, train
from datafree.condense import DMConfig, IDMConfig
from datafree.data import ImageSet, load_dataset, load_mnist5k, load_npz
from datafree.distill import DistillConfig, DistillResult
from datafree.errors import DatafreeError
from datafree.evaluate import evaluate
from datafree.models import create_model, list_models, load_weights
from datafree.prune import CRISPConfig
from datafree.quant import QuantConfig
from datafree.replay import MemoryBankConfig, VAEReplayConfig
from datafree.synthesis import GeneratorConfig, PixelConfig
from datafree.synthesis.guide import GuideConfig

__version__ = "0.1.0"
__all__ = ["CRISPConfig", "DMConfig", "DatafreeError", "DistillConfig", "DistillResult", "GeneratorConfig",
           "GuideConfig", "IDMConfig", "ImageSet", "MemoryBankConfig", "PixelConfig", "QuantConfig", "VAEReplayConfig",
           "condense", "create_model", "distill", "evaluate", "evaluate_dataset", "export_model", "list_models",
           "load_dataset", "load_mnist5k", "load_npz", "load_weights", "prune", "quantize", "sweep", "train"]
