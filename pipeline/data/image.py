"""Images: loaded lazily from disk (never all in memory), resized, normalized."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


def load_image(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")  # grayscale -> 3 channels: pretrained backbones expect RGB


def image_paths(comp, df) -> list[Path]:
    """The image files of `df`'s rows: its image column's values under the competition's image folder."""
    return [comp.image_dir / str(p) for p in df[comp.image_col]]


def build_transform(size: int, mean, std, augment=None):
    """Resize (or random-resized-crop / flip when augmenting), to tensor in [0, 1], then normalize."""
    from torchvision.transforms import v2  # 1.5 s to import: only members that read images wait for it

    steps = []
    if augment and augment.random_resized_crop:
        steps.append(v2.RandomResizedCrop(size, scale=tuple(augment.crop_scale), antialias=True))
    else:
        steps.append(v2.Resize((size, size), antialias=True))
    if augment and augment.hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(steps)


class ImageDataset(Dataset):
    """Rows of (image path, optional tabular features, optional target) as batch dicts."""

    def __init__(self, paths: list[Path], transform, tab: np.ndarray | None = None, y: np.ndarray | None = None):
        self.paths, self.transform, self.tab, self.y = paths, transform, tab, y

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.transform(load_image(self.paths[i]))}
        if self.tab is not None:
            item["tab"] = torch.from_numpy(self.tab[i])
        if self.y is not None:
            item["y"] = torch.tensor(self.y[i])
        return item


def channel_mean(paths: list[Path], size: int) -> tuple[float, float, float]:
    """Per-channel mean in [0, 1] of the given (training-fold) images, streamed one image at a time."""
    total = np.zeros(3)
    for p in paths:
        im = load_image(p).resize((size, size))
        total += np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(0) / 255.0
    return tuple((total / max(1, len(paths))).tolist())


def normalization(pretrained_stats, paths: list[Path], size: int) -> tuple[tuple, tuple]:
    """A pretrained backbone's own (mean, std); from scratch: zero-center by the fold's mean, no rescaling."""
    if pretrained_stats is not None:
        return pretrained_stats
    return channel_mean(paths, size), (1.0, 1.0, 1.0)
