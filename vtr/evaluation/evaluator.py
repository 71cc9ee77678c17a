"""Zero-shot retrieval evaluation with the official protocol (sentence-transformers-style evaluator).

    evaluator = RetrievalEvaluator(discover("msrvtt", "/data/msrvtt"), EvalSettings(device="cuda"))
    report = evaluator(model)          # {"dual": {...}, "rerank": {...}, "protocol": {...}, ...}

Pipeline (spec section 4): texts in batches -> text states + projected features; videos decoded with the
``middle`` sampling, squash-resize 224, ImageNet normalisation (decode workers) -> patch tokens + per-frame
projected features; dual-encoder scores = mean over frames of per-frame cosine (``dual``); ITM re-ranking of
the top k in both directions, others -100 (``rerank``). Video features are cached on disk by content key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from vtr.data.clips import ClipRequest, iter_clip_batches
from vtr.evaluation.datasets import EvalDataset
from vtr.evaluation.metrics import decoded_subset, dual_softmax, retrieval_metrics
from vtr.evaluation.rerank import rerank_topk
from vtr.runtime import inference_dtype, resolve_device

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """How to run an evaluation. ``frames``/``size``: None = what the model was built for (the released
    model: 8 frames at 224, the official protocol); a deviation from the protocol is flagged in the report."""

    frames: int | None = None
    size: int | None = None
    video_batch_size: int = 32
    text_batch_size: int = 256
    rerank_k: int = 128
    itm_batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"  # "bf16" (official: whole model in bf16 + autocast) or "fp32"; auto = bf16 on CUDA
    workers: int = 2
    dual_softmax: bool = False
    cache_dir: str | None = None  # None: no feature cache
    progress: bool = True


@dataclass
class VideoFeatureSet:
    embeds: torch.Tensor  # [Nv, T, D] float32, rows of decodable videos only
    tokens: torch.Tensor  # [Nv, N, C] (compute dtype), for re-ranking
    positions: list[int]  # index into the dataset's video list of each row
    failures: list[dict[str, Any]]  # videos that could not be decoded


class RetrievalEvaluator:
    """Evaluate a :class:`~vtr.model.retrieval.RetrievalModel` on one :class:`EvalDataset`."""

    def __init__(self, dataset: EvalDataset, settings: EvalSettings | None = None) -> None:
        self.dataset = dataset
        self.settings = settings or EvalSettings()

    # ------------------------------------------------------------------ setup

    def _prepare(self, model) -> tuple[Any, torch.device, torch.dtype]:
        device = resolve_device(self.settings.device)
        dtype = inference_dtype(device, self.settings.precision)
        model = model.to(device=device, dtype=dtype).eval()
        return model, device, dtype

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, file=sys.stderr, disable=not self.settings.progress, leave=False)

    def _autocast(self, device: torch.device, dtype: torch.dtype):
        return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    # ------------------------------------------------------------------ features

    @torch.no_grad()
    def text_features(self, model, device, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(projected [Nt, D] float32, states [Nt, L, H] compute dtype, masks [Nt, L]) on CPU."""
        texts, bs = self.dataset.texts, self.settings.text_batch_size
        embeds, states, masks = [], [], []
        with self._bar(len(texts), "texts") as bar:
            for i in range(0, len(texts), bs):
                tok = model.tokenize(texts[i:i + bs], max_len=self.dataset.max_txt_l)
                with self._autocast(device, dtype):
                    feats = model.encode_text(tok["input_ids"], tok["attention_mask"])
                embeds.append(feats.embeds.float().cpu())
                states.append(feats.states.to(dtype).cpu())
                masks.append(tok["attention_mask"].cpu())
                bar.update(len(texts[i:i + bs]))
        return torch.cat(embeds), torch.cat(states), torch.cat(masks)

    def _frames_size(self, model) -> tuple[int, int]:
        return self.settings.frames or model.cfg.num_frames, self.settings.size or model.cfg.img_size

    def _cache_key(self, model, frames: int, size: int, max_seconds, dtype) -> str | None:
        sha = getattr(model, "weights_sha256", None)
        if not sha or not self.settings.cache_dir:
            return None
        key = {"model": sha, "annotation": self.dataset.annotation_sha256, "videos": self.dataset.video_paths,
               "frames": frames, "size": size, "max_seconds": max_seconds, "dtype": str(dtype),
               "version": 1}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]

    @torch.no_grad()
    def video_features(self, model, device, dtype) -> VideoFeatureSet:
        """Decode and encode every video (sharded over ranks when torch.distributed is initialised)."""
        ds, st = self.dataset, self.settings
        frames, size = self._frames_size(model)
        max_seconds = ds.max_seconds
        key = self._cache_key(model, frames, size, max_seconds, dtype)
        cache = Path(st.cache_dir) / f"video_features_{key}.pt" if key else None
        if cache is not None and cache.is_file():
            log.info("video features from cache %s", cache)
            return VideoFeatureSet(**torch.load(cache, weights_only=False))

        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() \
            else (0, 1)
        mine = list(range(rank, len(ds.video_paths), world))
        requests = [ClipRequest(ds.video_paths[i]) for i in mine]
        embeds, tokens, positions, failures = [], [], [], []
        with self._bar(len(requests), "videos") as bar:
            for batch in iter_clip_batches(requests, batch_size=st.video_batch_size, num_workers=st.workers,
                                           num_frames=frames, size=size, max_seconds=max_seconds):
                for pos, reason, msg in batch.failures:
                    failures.append({"path": ds.video_paths[mine[pos]], "reason": reason, "message": msg})
                if batch.video is not None:
                    with self._autocast(device, dtype):
                        feats = model.encode_video(batch.video.to(device, dtype, non_blocking=True))
                    embeds.append(feats.embeds.float().cpu())
                    tokens.append(feats.tokens.to(dtype).cpu())
                    positions.extend(mine[p] for p in batch.positions)
                bar.update(len(batch.positions) + len(batch.failures))
        if not embeds:
            raise RuntimeError(f"none of the {len(requests)} videos could be decoded; first error: "
                               f"{failures[0]['message'] if failures else 'n/a'}")
        feats = VideoFeatureSet(torch.cat(embeds), torch.cat(tokens), positions, failures)
        if world > 1:
            feats = _gather_features(feats, world)
        if cache is not None and rank == 0:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            torch.save(asdict(feats), tmp)
            tmp.replace(cache)
        return feats

    # ------------------------------------------------------------------ run

    def __call__(self, model, model_name: str | None = None) -> dict[str, Any]:
        """Run the evaluation; returns the report (protocol, counts, ``dual`` and ``rerank`` metrics)."""
        t0 = time.perf_counter()
        ds, st = self.dataset, self.settings
        model, device, dtype = self._prepare(model)
        text_embeds, text_states, text_masks = self.text_features(model, device, dtype)
        video = self.video_features(model, device, dtype)

        # Videos that failed to decode leave the candidate set with their texts (reported, like missing files).
        keep_videos = video.positions
        keep_texts, txt2vid, vid2txt = decoded_subset(ds.txt2vid, ds.vid2txt, keep_videos)
        t_emb, t_states, t_masks = text_embeds[keep_texts], text_states[keep_texts], text_masks[keep_texts]

        itc = model.similarity(video.embeds, t_emb)  # [Nt, Nv] float32, temp 1
        dual_scores = torch.from_numpy(dual_softmax(itc.numpy())) if st.dual_softmax else itc
        report: dict[str, Any] = {"dual": retrieval_metrics(dual_scores, txt2vid, vid2txt)}

        if st.rerank_k > 0:
            def score_pairs(text_ids: torch.Tensor, video_ids: torch.Tensor) -> torch.Tensor:
                with torch.no_grad(), self._autocast(device, dtype):
                    logits = model.itm_logits(video.tokens[video_ids].to(device), t_states[text_ids].to(device),
                                              t_masks[text_ids].to(device))
                return logits[:, 1].float().cpu()

            k = min(st.rerank_k, len(keep_texts), len(keep_videos))
            with self._bar(len(keep_texts) + len(keep_videos), f"re-rank top {k}") as bar:
                t2v, v2t = rerank_topk(itc, k, score_pairs, batch_size=st.itm_batch_size,
                                       distributed=dist.is_available() and dist.is_initialized(),
                                       progress=lambda _d, _i, _n: bar.update(1))
            report["rerank"] = retrieval_metrics(t2v, txt2vid, vid2txt, score_v2t=v2t)

        frames, size = self._frames_size(model)
        deviations = [f"{name} {got} (protocol {want})" for name, got, want in
                      (("frames", frames, ds.num_frames), ("resolution", size, 224)) if got != want]
        report.update({
            **ds.summary(),
            "num_videos_evaluated": len(keep_videos),
            "num_texts_evaluated": len(keep_texts),
            "undecodable_videos": video.failures[:20],
            "num_undecodable_videos": len(video.failures),
            "protocol": {**ds.summary()["protocol"], "num_frames": frames, "resolution": size,
                         "deviations": deviations,
                         "transform": "squash-resize bicubic, /255, ImageNet mean/std",
                         "similarity": "mean over frames of per-frame cosine", "rerank_k": st.rerank_k,
                         "itm_score": "itm_head logit[:, 1] (raw)", "dual_softmax": st.dual_softmax},
            "model": {"name": model_name or getattr(model, "source_name", None) or getattr(model.cfg, "name", "?"),
                      "architecture": getattr(model.cfg, "name", None),
                      "path": getattr(model, "source_path", None),
                      "weights_sha256": getattr(model, "weights_sha256", None)},
            "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "wall_time_s": round(time.perf_counter() - t0, 2),
        })
        return report


def _gather_features(feats: VideoFeatureSet, world: int) -> VideoFeatureSet:
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, asdict(feats))
    positions = [pos for p in parts for pos in p["positions"]]
    order = sorted(range(len(positions)), key=positions.__getitem__)  # back to dataset order
    embeds = torch.cat([p["embeds"] for p in parts])[order]
    tokens = torch.cat([p["tokens"] for p in parts])[order]
    return VideoFeatureSet(embeds, tokens, [positions[i] for i in order], [f for p in parts for f in p["failures"]])
