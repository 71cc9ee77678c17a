"""Thread plan for indexing (decode workers + torch threads never exceed the cores), its use by Library.index,
and the early whole-run time estimate."""

from __future__ import annotations

import pytest
import torch

from vtr.estimate import RunEstimate
from vtr.threads import available_cores, indexing_threads, plan_threads


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16, 64])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_default_plan_never_oversubscribes(cores: int, device: str) -> None:
    plan = plan_threads(device, None, cores)
    assert plan.torch_threads >= 1 and plan.workers >= 0
    assert plan.workers + plan.torch_threads <= max(cores, 1 + plan.workers)
    assert plan.workers + plan.torch_threads == cores or cores == 1


def test_cpu_gives_most_cores_to_the_encoder_and_cuda_to_decoding() -> None:
    assert plan_threads("cpu", None, 2) == plan_threads("cpu", 0, 2)  # 2 cores: decode inline, both encode
    assert plan_threads("cpu", None, 2).torch_threads == 2
    assert plan_threads("cpu", None, 16).workers == 2 and plan_threads("cpu", None, 16).torch_threads == 14
    assert plan_threads("cuda", None, 16).workers == 12
    assert plan_threads("cpu", 3, 8).torch_threads == 5  # the user's worker count is kept, threads adapt


def test_indexing_threads_sets_and_restores() -> None:
    before = torch.get_num_threads()
    cores = available_cores()
    with indexing_threads(1, "cpu", cores=4) as workers:
        assert workers == 1 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    assert cores >= 1


@pytest.mark.parametrize("workers", [1])
def test_library_index_sets_torch_threads_from_workers(tmp_path, monkeypatch, workers: int) -> None:
    """Indexing with N decode workers encodes with cores - N torch threads (at least one)."""
    from vtr.data.synth import generate_world
    from vtr.library import Library
    from vtr.model.registry import save_model_dir
    from vtr.model.retrieval import build_model, config_for

    world = generate_world(tmp_path / "world", num_videos=3, seed=1)
    torch.manual_seed(0)
    model = build_model(config_for("videomamba_t16_minilm", img_size=32, num_frames=2, vision={"depth": 1}))
    model_dir = save_model_dir(model, tmp_path / "model")
    monkeypatch.setattr("vtr.threads.available_cores", lambda: 4)
    seen: list[int] = []
    original = Library._encode_clips

    def spy(self, video):
        seen.append(torch.get_num_threads())
        return original(self, video)

    monkeypatch.setattr(Library, "_encode_clips", spy)
    before = torch.get_num_threads()
    report = Library(home=tmp_path / "home", model=str(model_dir), device="cpu").index(
        [world.videos_dir], workers=workers, progress=False)
    assert report.indexed == 3 and seen and set(seen) == {4 - workers}
    assert torch.get_num_threads() == before


def test_run_estimate_says_total_once_after_a_measured_rate() -> None:
    now = [0.0]
    lines: list[str] = []
    est = RunEstimate(100, lines.append, clock=lambda: now[0])
    now[0] = 30.0  # model load + the first batch: not part of the rate
    est.update(10)
    assert not lines
    now[0] = 50.0
    est.update(20)  # 10 videos in 20 s: 2 s each, 80 left -> 160 s more, 210 s in all
    assert lines == ["estimate: 100 videos x 2.00 s each = about 4 min in all (3 min left)"]
    now[0] = 60.0
    est.update(30)
    assert len(lines) == 1
    quiet = RunEstimate(5, None)
    quiet.update(1)
    quiet.update(2)  # no sink: nothing to say, no error
