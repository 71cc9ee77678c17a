"""Training and validation data for :class:`~vtr.training.module.RetrievalLitModule`.

Training (official pretraining pipeline): annotation files in the official JSON format, ``rand`` frame sampling
and the train transform (one RandomResizedCrop + flip per clip), captions tokenised in the loader workers.
Several sources may be given; sources of one media type are concatenated, and every step draws a batch of a
single media type (images and videos alternate in a shuffled order, like the official ``MetaLoader``). The order
of media types and the shuffling depend only on ``(seed, epoch)``, so every rank runs the same media type at the
same step (the VTC all-gather needs equal shapes) and a resumed run sees exactly the batches it would have seen.

Randomness of a training sample (frame choice, crop, flip, caption choice) is drawn from a generator seeded with
``(seed, epoch, sample, attempt)``: independent of worker count and of the global RNG. A file that cannot be
decoded is logged once (per worker) and replaced by another sample of the same source, so batches keep their size
(a must under DDP, where ranks exchange equally sized features).

Video-only training (``stage1_masked``: no text loss): ``data.videos`` (a folder, searched recursively) or the
annotation files' videos, with their captions ignored; batches hold no tokens.

Validation: the inference clip loader of indexing and evaluation (:class:`vtr.data.clips.ClipDataset`: ``middle``
sampling and the eval transform); each rank encodes a shard of the videos (see :class:`ShardSampler`); the texts
are encoded by the module at the end of validation.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vtr.compat import ensure_torchvision
from vtr.data.clips import ClipDataset, ClipRequest
from vtr.data.datasets import VideoCaptionDataset, _captions_of, _media_of, load_annotations
from vtr.data.decode import read_frames, read_image
from vtr.data.text import pre_text
from vtr.data.transforms import train_transform
from vtr.errors import ConfigError, VideoDecodeError
from vtr.training.config import DataSource, TrainConfig, resolve_data

ensure_torchvision()
import lightning as L  # noqa: E402  (after the torchvision shim)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10


def detect_media(entries: Sequence[dict[str, Any]], declared: str, source: str) -> str:
    """``"video"`` or ``"image"`` for an annotation list (one media type per file)."""
    kinds = {"image" if _media_of(e)[1] else "video" for e in entries}
    if declared != "auto":
        if kinds - {declared}:
            raise ConfigError(f"{source}: declared media {declared!r} but it holds {', '.join(sorted(kinds))}")
        return declared
    if len(kinds) > 1:
        raise ConfigError(f"{source} mixes images and videos: split it into one file per media type")
    return kinds.pop() if kinds else "video"


class TrainCaptionDataset(VideoCaptionDataset):
    """Training samples of one annotation file; items are fetched by key ``(sample, epoch)``.

    A sample is an entry (``expand_captions=False``: a random caption each time, official pretraining) or an
    (entry, caption) pair (``expand_captions=True``: retrieval fine-tuning). ``idx`` is the per-video id
    ``id_offset + entry index`` — samples of one video are positives of each other in VTC.
    """

    def __init__(self, source: DataSource, num_frames: int, img_size: int, seed: int = 0,
                 expand_captions: bool = False, crop_scale: tuple[float, float] = (0.5, 1.0), hflip: bool = True,
                 id_offset: int = 0, max_words: int | None = None, backend: str = "auto",
                 entries: Sequence[dict[str, Any]] | None = None) -> None:
        super().__init__(source.anno if entries is None else entries, source.root, num_frames=num_frames,
                         strategy="rand", max_words=max_words, backend=backend, rng_seed=seed)
        self.media = detect_media(self.annotations, source.media, f"annotation file {source.anno!r}")
        self.img_size = img_size
        self.crop_scale = tuple(crop_scale)
        self.hflip_p = 0.5 if hflip else 0.0
        self.id_offset = id_offset
        self.samples: list[tuple[int, int | None]] = []
        for i, entry in enumerate(self.annotations):
            if expand_captions:
                self.samples.extend((i, c) for c in range(len(_captions_of(entry))))
            else:
                self.samples.append((i, None))

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, sample: int, rng: np.random.Generator) -> dict[str, Any]:
        entry_index, caption_index = self.samples[sample]
        entry = self.annotations[entry_index]
        rel, is_image = _media_of(entry)
        path = os.path.join(self.media_root, rel)
        if is_image:
            frames = read_image(path)
        else:
            frames = read_frames(path, self.num_frames, "rand", rng=rng, backend=self.backend).frames
        video = train_transform(frames, self.img_size, scale=self.crop_scale, hflip_p=self.hflip_p, rng=rng)
        if caption_index is None:
            caption = self._caption(entry, rng)
        else:
            caption = pre_text(_captions_of(entry)[caption_index], self.max_words)
        return {"video": video, "caption": caption, "idx": self.id_offset + entry_index, "media": self.media}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | None:
        sample, epoch = key if isinstance(key, tuple) else (key, 0)
        n = len(self.samples)
        for attempt in range(MAX_ATTEMPTS):
            current = sample if attempt == 0 else (sample + attempt * 7919) % n
            rng = np.random.default_rng([self.rng_seed, epoch, current, attempt])
            try:
                return self._load(current, rng)
            except VideoDecodeError as err:
                entry_index = self.samples[current][0]
                self._record_failure(os.path.join(self.media_root, _media_of(self.annotations[entry_index])[0]),
                                     err)
        return None


class KeyedConcat(Dataset):
    """Concatenation of :class:`TrainCaptionDataset` s addressed by ``(global index, epoch)`` keys."""

    def __init__(self, datasets: Sequence[TrainCaptionDataset]) -> None:
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any] | None:
        index, epoch = key
        d = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.datasets[d][(index - self.offsets[d], epoch)]


class MediaBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, epoch)`` keys, one media group per batch, sharded over ranks (drop-last).

    ``groups``: for each media group, the global indices of its samples. Per epoch and group, the indices are
    permuted with a generator seeded by ``(seed, epoch, group)``, rank ``r`` takes every ``world``-th one starting
    at ``r`` (the remainder is dropped, like ``DistributedSampler(drop_last=True)``), and the rank's share is cut
    into full batches. The order in which groups take turns is a shuffle seeded by ``(seed, epoch)`` — the same on
    every rank, so all ranks run the same media type at each step.

    The batch stream is a function of the global batch counter ``g`` only (data epoch ``g // len(self)``, batch
    ``g % len(self)`` in it). An iteration yields one epoch's worth of batches starting at ``position_fn()`` (the
    number of batches the run has consumed, e.g. Lightning's total batch count — correct after a resume from a
    mid-epoch checkpoint or from a run stopped early by ``max_steps``). Without ``position_fn`` it yields the epoch
    given to :meth:`set_epoch` (called by Lightning through ``batch_sampler.sampler``), less the first
    :meth:`skip_batches` batches.
    """

    def __init__(self, groups: Sequence[Sequence[int]], batch_size: int, seed: int = 0, rank: int = 0,
                 world: int = 1, shuffle: bool = True, position_fn: Callable[[], int] | None = None) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} out of range for world size {world}")
        self.groups = [np.asarray(g, dtype=np.int64) for g in groups]
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.shuffle = shuffle
        self.epoch = 0
        self._skip = 0
        self.position_fn = position_fn

    @property
    def sampler(self) -> MediaBatchSampler:  # lets Lightning's ``_set_sampler_epoch`` find :meth:`set_epoch`
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_batches(self, n: int) -> None:
        self._skip = max(0, int(n))

    def batches_per_group(self) -> list[int]:
        return [(len(g) // self.world) // self.batch_size for g in self.groups]

    def __len__(self) -> int:
        return sum(self.batches_per_group())

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global sample indices of this rank's batches in ``epoch``, in order."""
        per_group: list[list[np.ndarray]] = []
        for g, (indices, nb) in enumerate(zip(self.groups, self.batches_per_group(), strict=True)):
            if self.shuffle:
                perm = np.random.default_rng([self.seed, epoch, g]).permutation(len(indices))
                indices = indices[perm]
            mine = indices[self.rank: nb * self.batch_size * self.world: self.world]
            per_group.append([mine[i * self.batch_size:(i + 1) * self.batch_size] for i in range(nb)])
        order = np.concatenate([np.full(len(b), g, dtype=np.int64) for g, b in enumerate(per_group)] or [[]])
        if self.shuffle and len(order):
            order = order[np.random.default_rng([self.seed, epoch, 1 << 20]).permutation(len(order))]
        cursors = [0] * len(per_group)
        out = []
        for g in order.astype(np.int64).tolist():
            out.append(per_group[g][cursors[g]].tolist())
            cursors[g] += 1
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        nb = len(self)
        if self.position_fn is not None:  # one epoch's worth from the run's position
            start = int(self.position_fn())
            stop = start + nb
        else:  # the rest of the current epoch
            start, stop = self.epoch * nb + min(self._skip, nb), (self.epoch + 1) * nb
        self._skip = 0
        cache: dict[int, list[list[int]]] = {}
        for g in range(start, stop):
            epoch, i = divmod(g, nb)
            if epoch not in cache:
                cache = {epoch: self.epoch_batches(epoch)}
            yield [(k, epoch) for k in cache[epoch][i]]


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of a dataset of ``n`` items (no padding, no shuffling)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))


def folder_entries(folder: str) -> list[dict[str, Any]]:
    """Annotation entries (no caption) of the videos under ``folder``, relative to it, in sorted order."""
    from vtr.index.files import walk_videos

    root = os.path.realpath(os.path.expanduser(folder))
    entries = [{"video": os.path.relpath(path, root), "caption": ""} for path in walk_videos([root])]
    if not entries:
        raise ConfigError(f"data.videos {folder!r} holds no video files (mp4, mkv, webm, ...)")
    return entries


class VideoCollate:
    """Stack a video-only training batch (captions dropped; picklable)."""

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
        items = [item for item in items if item is not None]
        if not items:
            return None
        return {"video": torch.stack([item["video"] for item in items]),
                "idx": torch.tensor([item["idx"] for item in items], dtype=torch.long), "media": items[0]["media"]}


class TrainCollate:
    """Stack a training batch and tokenise its captions (runs in the loader workers; picklable)."""

    def __init__(self, max_txt_l: int) -> None:
        self.max_txt_l = max_txt_l

    def __call__(self, items: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
        from vtr.encoders.bert import load_tokenizer, tokenize

        items = [item for item in items if item is not None]
        if not items:
            return None
        captions = [item["caption"] for item in items]
        enc = tokenize(load_tokenizer(), captions, self.max_txt_l)
        return {
            "video": torch.stack([item["video"] for item in items]),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "idx": torch.tensor([item["idx"] for item in items], dtype=torch.long),
            "media": items[0]["media"],
            "caption": captions,
        }


class ValCollate:
    """Stack validation clips (:class:`~vtr.data.clips.ClipDataset` items) as ``{"video", "index"}``; a file that
    cannot be decoded is logged and left out (the module counts what is missing; picklable)."""

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        for item in items:
            if "error" in item:
                log.warning("skipping %s", item["message"])
        items = [item for item in items if "error" not in item]
        if not items:
            return None
        return {"video": torch.cat([item["video"] for item in items]),
                "index": torch.tensor([item["i"] for item in items], dtype=torch.long)}


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning treats as resumable: the position in the batch stream is recovered from
    Lightning's restored batch counter (:class:`MediaBatchSampler` ``position_fn``), so the state itself is empty."""

    def state_dict(self) -> dict[str, Any]:
        sampler = self.batch_sampler
        return {"epoch": getattr(sampler, "epoch", 0)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class RetrievalDataModule(L.LightningDataModule):
    """Datasets and loaders of a :class:`~vtr.training.config.TrainConfig` (see the module doc).

    ``num_frames`` / ``img_size`` / ``max_txt_l`` come from the model (the resolved
    :class:`~vtr.model.retrieval.RetrievalConfig`). After :meth:`setup`: ``val_texts``, ``val_txt2vid``,
    ``val_vid2txt`` and ``val_groups`` (the ``temporal_group`` of each validation video, or None) describe the
    validation retrieval task; ``media_types`` lists the training media groups.
    """

    def __init__(self, cfg: TrainConfig, num_frames: int, img_size: int, max_txt_l: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_frames = num_frames
        self.img_size = img_size
        self.max_txt_l = max_txt_l
        self.train_sources, self.val_source = resolve_data(cfg)
        self.entries: dict[int, list[dict[str, Any]]] = {}  # source number -> in-memory entries (data.videos)
        if cfg.data.videos is not None:
            self.train_sources = [DataSource(cfg.data.videos, os.path.realpath(os.path.expanduser(cfg.data.videos)),
                                             "video")]
            self.entries[0] = folder_entries(cfg.data.videos)
        if cfg.video_only:
            self.val_source = None  # no captions to retrieve
        self.train_set: KeyedConcat | None = None
        self.batch_sampler: MediaBatchSampler | None = None
        self.val_set: ClipDataset | None = None
        self.val_texts: list[str] = []
        self.val_txt2vid: list[int] = []
        self.val_vid2txt: list[list[int]] = []
        self.val_groups: list[str | None] = []
        self.media_types: list[str] = []

    # ------------------------------------------------------------------ setup

    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def setup(self, stage: str | None = None) -> None:
        d = self.cfg.data
        if self.train_set is None and self.train_sources and stage in (None, "fit"):
            datasets, offset = [], 0
            for i, src in enumerate(self.train_sources):
                ds = TrainCaptionDataset(src, self.num_frames, self.img_size, seed=self.cfg.seed,
                                         expand_captions=d.expand_captions and not self.cfg.video_only,
                                         crop_scale=d.crop_scale, hflip=d.hflip, id_offset=offset,
                                         max_words=d.max_words, backend=d.backend, entries=self.entries.get(i))
                offset += len(ds.annotations)
                datasets.append(ds)
            self.train_set = KeyedConcat(datasets)
            self.media_types = sorted({ds.media for ds in datasets})
            groups = []
            for media in self.media_types:
                indices = [i for ds, start in zip(datasets, self.train_set.offsets, strict=False) if ds.media == media
                           for i in range(start, start + len(ds))]
                groups.append(indices)
            rank, world = self._rank_world()
            self.batch_sampler = MediaBatchSampler(groups, d.batch_size, seed=self.cfg.seed, rank=rank, world=world)
            if len(self.batch_sampler) == 0:
                raise ConfigError(f"the training data ({len(self.train_set)} samples over {world} rank(s)) is smaller "
                                  f"than one batch of {d.batch_size}: lower data.batch_size")
        if self.val_set is None and self.val_source is not None:
            self._setup_val(self.val_source)

    def _setup_val(self, src: DataSource) -> None:
        entries = load_annotations(src.anno)
        if self.cfg.data.val_max_videos is not None:
            entries = entries[: self.cfg.data.val_max_videos]
        detect_media(entries, src.media, f"annotation file {src.anno!r}")
        # the inference clip loader of `vtr index` / `vtr eval` (middle frames, eval transform): one code path
        self.val_set = ClipDataset([ClipRequest(os.path.join(src.root, _media_of(e)[0])) for e in entries],
                                   num_frames=self.num_frames, size=self.img_size, strategy="middle",
                                   backend=self.cfg.data.backend)
        texts, txt2vid, vid2txt = [], [], []
        for v, entry in enumerate(entries):
            vid2txt.append([])
            for caption in _captions_of(entry):
                vid2txt[v].append(len(texts))
                txt2vid.append(v)
                texts.append(pre_text(caption, self.cfg.data.max_words))
        self.val_texts, self.val_txt2vid, self.val_vid2txt = texts, txt2vid, vid2txt
        self.val_groups = [e.get("temporal_group") for e in entries]

    # ------------------------------------------------------------------ loaders

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (batches per rank / gradient accumulation, rounded up)."""
        if self.batch_sampler is None:
            self.setup("fit")
        return math.ceil(len(self.batch_sampler) / self.cfg.trainer.accumulate_grad_batches)

    def _loader_kwargs(self) -> dict[str, Any]:
        d = self.cfg.data
        workers = d.num_workers
        return {
            "num_workers": workers,
            "persistent_workers": bool(d.persistent_workers and workers > 0),
            "pin_memory": bool(d.pin_memory and torch.cuda.is_available()),
        }

    def train_dataloader(self) -> DataLoader:
        if self.batch_sampler is None:
            self.setup("fit")
        if getattr(self, "trainer", None) is not None:
            self.batch_sampler.position_fn = self._batches_consumed
        collate = VideoCollate() if self.cfg.video_only else TrainCollate(self.max_txt_l)
        return ResumableDataLoader(self.train_set, batch_sampler=self.batch_sampler, collate_fn=collate,
                                   **self._loader_kwargs())

    def _batches_consumed(self) -> int:
        """Training batches the run has consumed so far (restored on resume): Lightning's total batch count."""
        return int(self.trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        rank, world = self._rank_world()
        kwargs = self._loader_kwargs()
        kwargs["persistent_workers"] = False
        return DataLoader(self.val_set, batch_size=self.cfg.data.val_batch_size,
                          sampler=ShardSampler(len(self.val_set), rank, world), collate_fn=ValCollate(),
                          **kwargs)
