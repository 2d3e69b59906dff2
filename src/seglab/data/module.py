"""LightningDataModule: train loader with augmentation, evaluation loaders without.

Evaluation loaders never pad or repeat samples across processes (an unrepeated
distributed sampler), so a DDP evaluation counts every pixel exactly once.
"""

from __future__ import annotations

import os

import cv2
import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler

from seglab.config import Config
from seglab.data.dataset import DatasetDefinition, SegDataset
from seglab.data.imageio_ext import image_size
from seglab.data.transforms import PairTransform
from seglab.errors import SeglabError


def list_collate(batch: list[dict]) -> dict:
    """Keep images of different sizes: a dict of lists."""
    return {k: [b[k] for b in batch] for k in batch[0]}


def auto_workers(setting: int | str) -> int:
    """``auto``: one loader process beside the training process (2-core machines), up to 4."""
    if setting != "auto":
        return int(setting)
    return min(4, max(0, (os.cpu_count() or 1) - 1))


_fork_hook_registered = False


def single_thread_opencv_in_forked_children() -> None:
    """Loader processes run OpenCV on one thread, as the DataLoader runs torch there: they
    share the cores with the training step. ``cv2.setNumThreads`` cannot be called in the
    forked child itself: once the parent has used OpenCV's thread pool, the child hangs in
    ``pthread_cond_destroy`` (seen with opencv 5.0, pthreads backend). So the parent drops to
    one thread just before a fork and restores its count just after; the child keeps one."""
    global _fork_hook_registered
    if _fork_hook_registered:
        return
    _fork_hook_registered = True
    saved = [1]  # the parent's thread count across one fork

    def before() -> None:
        saved[0] = cv2.getNumThreads()
        cv2.setNumThreads(1)

    os.register_at_fork(before=before, after_in_parent=lambda: cv2.setNumThreads(saved[0]))


class SegDataModule(L.LightningDataModule):
    def __init__(
        self,
        cfg: Config,
        definition: DatasetDefinition,
        train_split: str | None = "train",
        eval_split: str | None = "val",
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.definition = definition
        self.train_set = self.eval_set = None
        if train_split:
            t = PairTransform(
                cfg.augment,
                definition.ignore_index,
                base_scale=cfg.inference.scale,
            )
            self.train_set = SegDataset(
                definition,
                train_split,
                transform=t,
                cache=cfg.data.cache,
                fraction=cfg.data.train_fraction,
                seed=cfg.seed,
            )
            self._check_batchable(self.train_set)
        if eval_split:
            self.eval_set = SegDataset(definition, eval_split, cache=cfg.data.cache)

    def _check_batchable(self, ds: SegDataset) -> None:
        if self.cfg.augment.crop or self.cfg.train.batch_size == 1:
            return
        if self.cfg.data.cache:  # decoded already
            sizes = {ds.load(i)[0].shape[:2] for i in range(len(ds))}
        else:  # from the file headers, before the loader's collate fails on the first batch
            sizes = {image_size(it.image) for it in ds.pairs}
        if len(sizes) > 1:
            raise SeglabError(
                f"split '{ds.split}' has images of {len(sizes)} different sizes; set augment.crop "
                "(e.g. [256, 256]) or train.batch_size: 1"
            )

    def _rank(self) -> tuple[int, int]:
        t = getattr(self, "trainer", None)
        return (t.world_size, t.global_rank) if t is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        world, rank = self._rank()
        n = len(self.train_set)
        bs = self.cfg.train.batch_size
        sampler = (
            DistributedSampler(self.train_set, world, rank, shuffle=True, seed=self.cfg.seed)
            if world > 1
            else None
        )
        workers = auto_workers(self.cfg.train.num_workers)
        if workers:
            single_thread_opencv_in_forked_children()
        return DataLoader(
            self.train_set,
            batch_size=bs,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=n // world > bs,
            pin_memory=False,
        )

    def _eval_loader(self) -> DataLoader:
        world, rank = self._rank()
        sampler = (
            UnrepeatedDistributedSampler(
                self.eval_set, num_replicas=world, rank=rank, shuffle=False
            )
            if world > 1
            else None
        )
        return DataLoader(
            self.eval_set,
            batch_size=self.cfg.inference.batch_size,
            shuffle=False,
            sampler=sampler,
            num_workers=0,
            collate_fn=list_collate,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()
