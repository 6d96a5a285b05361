"""The locality prior that makes the demo model's attention block-sparse (demo/locality.py)."""

import json

import pytest
import torch

from calibstudio.engine.attention_hook import dense_attention
from calibstudio.engine.models.demo.locality import LocalityPenalty, locality_windows
from calibstudio.engine.models.demo.model import default_folder


def test_windows_are_the_own_frame_or_the_same_place_next_door():
    w = locality_windows((8, 16, 16), heads=4, block=128)  # the demo grid: two blocks per latent frame
    assert w.shape == (4, 16, 16)
    spatial, temporal = w[0], w[1]
    assert spatial[4].nonzero().flatten().tolist() == [4, 5]  # frame 2, top half: both halves of frame 2
    assert temporal[4].nonzero().flatten().tolist() == [2, 6]  # the top halves of frames 1 and 3
    assert temporal[0].nonzero().flatten().tolist() == [2]  # the first frame has one neighbour
    assert torch.equal(w[2], spatial) and torch.equal(w[3], temporal)
    assert abs(w.float().mean().item() - 0.117) < 1e-3  # what calibration can reach once the model obeys


def test_anchored_temporal_windows_also_hold_the_same_place_in_the_first_frame():
    plain = locality_windows((8, 16, 16), heads=2, block=128)
    w = locality_windows((8, 16, 16), heads=2, block=128, anchor=True)
    assert torch.equal(w[0], plain[0])  # spatial heads unchanged
    assert w[1][12].nonzero().flatten().tolist() == [0, 10, 14]  # frame 6 top: frame 0, 5 and 7 top halves
    assert w[1][0].nonzero().flatten().tolist() == [0, 2]  # the first frame: itself and its neighbour
    assert w[1][13].nonzero().flatten().tolist() == [1, 11, 15]  # bottom halves stay bottom halves


def test_far_windows_add_dilated_reaches_to_every_second_temporal_head():
    plain = locality_windows((16, 16, 16), heads=8, block=128)  # the 32-frame demo grid
    w = locality_windows((16, 16, 16), heads=8, block=128, far=(4, 8))
    for head in (0, 1, 2, 4, 5, 6):
        assert torch.equal(w[head], plain[head])  # spatial heads and heads 1, 5 keep their windows
    assert torch.equal(w[3], w[7])
    assert w[3][16].nonzero().flatten().tolist() == [0, 8, 14, 18, 24]  # frame 8 top: frames 0, 4, 7, 9, 12
    assert w[3][1].nonzero().flatten().tolist() == [3, 9, 17]  # frame 0 bottom: frames 1, 4 and 8, bottom halves
    assert torch.equal(w[3] & plain[3], plain[3])  # the neighbours stay: a model of the plain windows keeps them
    assert w[3].sum(1).max() == 5  # at most 5 of 32 key blocks a query (two reaches of 8 never fit), not a wide window


def test_a_frame_that_splits_a_block_is_refused():
    with pytest.raises(ValueError, match="whole number"):
        locality_windows((4, 10, 10), heads=2, block=128)


def test_outside_mass_is_the_softmax_mass_off_the_window():
    grid, heads, block, D = (4, 4, 8), 2, 16, 8
    penalty = LocalityPenalty(grid, heads, block=block, sample=2)
    q, k = torch.randn(2, 128, heads, D), torch.randn(2, 128, heads, D)
    probs = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / D**0.5, dim=-1)
    window = locality_windows(grid, heads, block).repeat_interleave(block, 1).repeat_interleave(block, 2)
    want = (probs * ~window).sum(-1)
    torch.testing.assert_close(penalty.outside_mass(q, k), want, atol=1e-5, rtol=1e-4)


def test_attend_is_dense_attention_and_collects_the_penalty_only_when_training():
    penalty = LocalityPenalty((4, 4, 8), heads=2, block=16, sample=1)
    q, k, v = (torch.randn(3, 128, 2, 8, requires_grad=True) for _ in range(3))
    with torch.no_grad():
        torch.testing.assert_close(penalty.attend(q, k, v), dense_attention(q, k, v))
    with pytest.raises(RuntimeError, match="no self-attention"):
        penalty.take()  # nothing collected without gradients (sampling at the end of training)
    penalty.attend(q, k, v)
    penalty.attend(q, k, v)
    first = penalty.outside_mass(q[:1], k[:1]).mean()
    torch.testing.assert_close(penalty.take(), torch.stack([first, first]))  # one term per call, on the first clip
    with pytest.raises(RuntimeError):
        penalty.take()  # and it starts afresh


def test_weights_leave_clips_out_of_the_penalty():
    """``train --local-below``: clips at noise levels that run dense do not count toward the prior."""
    penalty = LocalityPenalty((4, 4, 8), heads=2, block=16, sample=3)
    q, k, v = (torch.randn(3, 128, 2, 8, requires_grad=True) for _ in range(3))
    penalty.weights = torch.tensor([0.0, 1.0, 1.0])
    penalty.attend(q, k, v)
    want = penalty.outside_mass(q[1:], k[1:]).mean()
    torch.testing.assert_close(penalty.take(), want[None])
    penalty.weights = torch.zeros(3)
    penalty.attend(q, k, v)
    assert penalty.take().item() == 0.0  # no clip left: no pull, and no division by zero


def test_minimising_the_penalty_moves_attention_into_the_windows():
    penalty = LocalityPenalty((4, 4, 8), heads=2, block=16, sample=1)
    torch.manual_seed(0)
    q, k = torch.randn(1, 128, 2, 8, requires_grad=True), torch.randn(1, 128, 2, 8, requires_grad=True)
    before = penalty.outside_mass(q, k).mean().item()
    optimizer = torch.optim.Adam([q, k], lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        penalty.outside_mass(q, k).mean().backward()
        optimizer.step()
    assert penalty.outside_mass(q, k).mean().item() < before / 3


def test_training_with_the_prior_logs_it_and_records_it_in_the_card(tmp_path):
    from calibstudio.engine.models.demo.train import parse_args, train

    train(parse_args(["--out", str(tmp_path), "--batch", "1", "--workers", "0", "--steps", "1", "--log-every", "1",
                      "--eval-clips", "0", "--locality", "0.1", "--locality-sample", "1"]))
    row = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])
    assert 0 < row["outside_mass"] < 1
    card = json.loads((tmp_path / "demo_model" / "config.json").read_text())["training"]
    assert card["locality"] == 0.1 and card["locality_anchor"] is False
    assert json.loads((tmp_path / "state.json").read_text())["locality"] == 0.1


def test_restricted_rows_attend_inside_their_windows_only():
    grid, heads, block, D = (4, 4, 8), 2, 16, 8
    penalty = LocalityPenalty(grid, heads, block=block, sample=0)
    penalty.restrict_from = 1
    q, k, v = (torch.randn(2, 128, heads, D) for _ in range(3))
    window = locality_windows(grid, heads, block).repeat_interleave(block, 1).repeat_interleave(block, 2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / D**0.5
    probs = torch.softmax(scores.masked_fill(~window, float("-inf")), dim=-1)
    want = torch.einsum("bhqk,bkhd->bqhd", probs, v)
    out = penalty.attend(q, k, v)
    torch.testing.assert_close(out[:1], dense_attention(q[:1], k[:1], v[:1]))  # rows before: dense
    torch.testing.assert_close(out[1:], want[1:], atol=1e-5, rtol=1e-4)


def test_consistency_training_optimises_the_gap_with_the_prior_and_records_it(tmp_path):
    from calibstudio.engine.models.demo.train import parse_args, train

    train(parse_args(["--out", str(tmp_path), "--batch", "2", "--workers", "0", "--steps", "1", "--log-every", "1",
                      "--eval-clips", "0", "--consistency", "2.0", "--locality", "0.5", "--locality-sample", "1",
                      "--locality-anchor", "--consistency-teacher",
                      "--init", str(default_folder())]))  # trained: the two paths differ
    row = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])
    assert row["dense_window_gap"] > 1e-4 and 0 < row["outside_mass"] < 1
    # both terms are in what the optimiser minimised (one was once dropped when both were on)
    want = row["loss"] + 2.0 * row["dense_window_gap"] + 0.5 * row["outside_mass"]
    assert abs(row["objective"] - want) < 1e-4
    card = json.loads((tmp_path / "demo_model" / "config.json").read_text())["training"]
    assert card["consistency"] == 2.0 and card["locality"] == 0.5 and card["locality_anchor"] is True
    assert card["consistency_teacher"] is True and card["local_below"] == 1.0
    assert len(row["outside_by_layer"]) == 6  # one term per layer of the demo model


def test_local_below_leaves_the_noisiest_examples_to_dense_attention(tmp_path):
    """With every example above the level, neither the prior nor the windowed twins pull at all."""
    from calibstudio.engine.models.demo.train import parse_args, train

    train(parse_args(["--out", str(tmp_path), "--batch", "2", "--workers", "0", "--steps", "1", "--log-every", "1",
                      "--eval-clips", "0", "--consistency", "2.0", "--locality", "0.5", "--locality-sample", "1",
                      "--local-below", "1e-6", "--init", str(default_folder())]))
    row = json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])
    assert row["dense_window_gap"] == 0 and row["outside_mass"] == 0 and row["objective"] == row["loss"]
    config = json.loads((tmp_path / "demo_model" / "config.json").read_text())
    assert config["training"]["local_below"] == 1e-6
    assert config["defaults"]["dense_steps"] == config["defaults"]["steps"]  # every level above it: all steps dense


def test_the_steps_above_the_local_level_are_the_models_dense_steps():
    from calibstudio.engine.models.demo.model import DemoPipeline
    from calibstudio.engine.models.demo.train import dense_steps_above

    pipe = DemoPipeline.fresh(0)  # 20 steps, shift 2: sigmas 1.0, 0.973, 0.945, 0.915, 0.883, ...
    assert dense_steps_above(pipe, 0.93) == 3
    assert dense_steps_above(pipe, 0.9) == 4
    assert dense_steps_above(pipe, 1.0) == 0  # the prior covered every level: no step needs to run dense


def test_consistency_needs_two_rows():
    from calibstudio.engine.models.demo.train import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--batch", "1", "--consistency", "1"])


def test_local_below_weights_only_the_low_noise_pairs():
    from calibstudio.engine.models.demo.train import consistency_gap, sparse_noise_levels

    sigma = torch.tensor([0.2, 0.95, 0.5])
    low = sparse_noise_levels(sigma, 0.9)
    assert low.tolist() == [1.0, 0.0, 1.0]
    assert sparse_noise_levels(sigma, 1.0).tolist() == [1.0, 1.0, 1.0]  # the default: every level
    velocity = torch.randn(6, 3, 2, 2)
    gaps = ((velocity[:3] - velocity[3:]) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(consistency_gap(velocity, 3, weights=low), (gaps[0] + gaps[2]) / 2)


def test_consistency_teacher_moves_only_the_windowed_pass():
    from calibstudio.engine.models.demo.train import consistency_gap

    for teacher in (False, True):
        velocity = torch.randn(4, 3, 2, 2, requires_grad=True)
        gap = consistency_gap(velocity, 2, teacher=teacher)
        torch.testing.assert_close(gap, ((velocity[:2] - velocity[2:]) ** 2).mean())
        gap.backward()
        assert velocity.grad[2:].abs().sum() > 0
        assert (velocity.grad[:2].abs().sum() == 0) == teacher
