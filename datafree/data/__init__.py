"""Real data: npz / ImageFolder / MNIST-5k loaders and tensor-batched augmentation."""

from datafree.data.augment import normalize, random_crop_flip
from datafree.data.loaders import ImageSet, load_dataset, load_image_folder, load_mnist5k, load_npz, save_npz

__all__ = ["ImageSet", "load_dataset", "load_image_folder", "load_mnist5k", "load_npz", "normalize",
           "random_crop_flip", "save_npz"]
