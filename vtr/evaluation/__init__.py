"""Zero-shot retrieval evaluation: metrics (``itm_eval``), top-k ITM re-ranking and dataset discovery."""

from vtr.evaluation.datasets import DATASETS, DatasetSpec, EvalDataset, discover, get_spec
from vtr.evaluation.metrics import dual_softmax, retrieval_metrics, retrieval_ranks, to_official_names
from vtr.evaluation.rerank import rerank_topk, topk_indices

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "EvalDataset",
    "discover",
    "dual_softmax",
    "get_spec",
    "rerank_topk",
    "retrieval_metrics",
    "retrieval_ranks",
    "to_official_names",
    "topk_indices",
]
