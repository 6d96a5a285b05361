"""``calibstudio bench e2e`` end to end on the CPU (tiny config): the JSON contract and the kernel breakdown."""

import json

import pytest

pytest.importorskip("diffusers")

from calibstudio.engine.bench_e2e import main  # noqa: E402


def test_quick_run_writes_the_contract_rows_and_a_breakdown(tmp_path):
    out = tmp_path / "e2e.json"
    assert main(["--quick", "--res", "480p", "--densities", "1.0", "0.25", "--compiled", "0", "--layers", "1",
                 "--breakdown", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"device", "torch", "rows"} <= set(report) and report["config"] == "tiny"
    rows = report["rows"]
    assert [r["density"] for r in rows] == [1.0, 0.25]
    for row in rows:
        assert {"res", "frames", "tokens", "density", "compiled", "ms_dense", "ms_sparse", "speedup"} <= set(row)
        assert row["res"] == "480p" and row["compiled"] is False and row["ms_sparse"] > 0
        assert row["speedup"] == pytest.approx(row["ms_dense"] / row["ms_sparse"])
    breakdown = report["breakdown_ms"]
    assert set(breakdown) == {"480p eager sdpa", "480p eager sparse_1.0", "480p eager sparse_0.25"}
    top = breakdown["480p eager sparse_0.25"]
    assert top and all(ms >= 0 and calls >= 1 for _, ms, calls in top)
    assert [ms for _, ms, _ in top] == sorted((ms for _, ms, _ in top), reverse=True)


def test_each_compile_mode_gets_its_rows_against_the_eager_baseline(tmp_path):
    out = tmp_path / "e2e.json"
    assert main(["--quick", "--res", "480p", "--densities", "0.25", "--compiled", "0", "1", "--layers", "1",
                 "--compile-mode", "default", "reduce-overhead", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["compiled"], r["compile_mode"]) for r in rows] == [(False, None), (True, "default"),
                                                                 (True, "reduce-overhead")]
    eager = rows[0]["ms_dense"]
    for row in rows:
        assert row["speedup_vs_eager_sdpa"] == pytest.approx(eager / row["ms_sparse"])


def test_fuse_qkv_times_the_sparse_step_with_one_qkv_gemm_beside_the_default(tmp_path):
    out = tmp_path / "e2e.json"
    assert main(["--quick", "--res", "480p", "--densities", "0.25", "--compiled", "0", "--layers", "1",
                 "--fuse-qkv", "--breakdown", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["speedup_vs_eager_sdpa_fused_qkv"] == pytest.approx(row["ms_dense"] / row["ms_sparse_fused_qkv"])
    # the baseline stays diffusers' default: only the sparse step gets a fused twin
    assert set(report["breakdown_ms"]) == {"480p eager sdpa", "480p eager sparse_0.25",
                                           "480p eager sparse_0.25 fused-qkv"}


def test_variants_take_turns_in_a_balanced_order_with_their_hook_installed():
    from calibstudio.kernels.bench import Turn, take_turns

    log = []

    def variant(name):
        return (lambda: log.append(("call", name)), lambda: log.append(("install", name)),
                lambda: log.append(("remove", name)))

    timed = take_turns({n: Turn(*variant(n)) for n in "abcd"}, rounds=4, calls=2, cuda=False)
    order = [n for kind, n in log if kind == "install"]
    rounds = [order[i:i + 4] for i in range(0, len(order), 4)]
    assert all(sorted(r) == list("abcd") for r in rounds)  # every variant once per round
    # every variant follows every other exactly once (its first calls run at the clocks its predecessor left)
    pairs = [(r[i - 1], r[i]) for r in rounds for i in range(1, 4)]
    assert sorted(pairs) == sorted((x, y) for x in "abcd" for y in "abcd" if x != y)
    # each turn: install, one untimed call and two timed calls of that variant only, remove
    turns = [log[i:i + 5] for i in range(0, len(log), 5)]
    assert all(t == [("install", t[0][1])] + [("call", t[0][1])] * 3 + [("remove", t[0][1])] for t in turns)
    assert {n: t["samples"] for n, t in timed.items()} == {"a": 8, "b": 8, "c": 8, "d": 8}
    assert all(t["ms"] >= 0 and t["gpu"] is None for t in timed.values())
    assert take_turns({}, rounds=2, calls=1, cuda=False) == {}  # every variant failed its warm-up


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 6])
def test_balanced_order_lets_every_variant_follow_every_other_equally_often(n):
    from calibstudio.kernels.bench import balanced_order

    rounds = [balanced_order(n, r) for r in range(n if n % 2 == 0 else 2 * n)]
    assert all(sorted(r) == list(range(n)) for r in rounds)
    pairs = [(r[i - 1], r[i]) for r in rounds for i in range(1, n)]
    assert len(set(pairs)) == n * (n - 1) and len(pairs) == (1 if n % 2 == 0 else 2) * n * (n - 1)


def test_gpu_turns_record_the_joules_of_each_variants_calls(monkeypatch):
    """At the power cap time follows energy: a variant records J per call from the GPU's counter, unless its timed
    calls are too short for the counter to read."""
    from calibstudio.kernels import bench

    counter = {"mj": 0.0}
    cost = {"a": 2000.0, "b": 500.0}  # mJ per call; the untimed first call of a turn is not counted

    def call(name):
        counter["mj"] += cost[name]

    ms = {"a": 200.0, "b": 1.0}  # b's six timed calls last 6 ms: less than one step of the counter

    monkeypatch.setattr(bench, "_call_ms", lambda fn, cuda: fn() or ms[fn.__name__])
    monkeypatch.setattr(bench, "energy_mj", lambda: counter["mj"])
    monkeypatch.setattr(bench, "gpu_telemetry", lambda: {"sm_mhz": 1500.0, "temp_c": 60.0, "power_w": 700.0})
    variants = {}
    for name in "ab":
        def variant(name=name):
            call(name)
        variant.__name__ = name
        variants[name] = bench.Turn(variant)
    timed = bench.take_turns(variants, rounds=2, calls=3, cuda=True)
    assert timed["a"]["gpu"]["j_per_call"] == 2.0
    assert "j_per_call" not in timed["b"]["gpu"]  # too short to read: left out rather than recorded as noise
    assert timed["b"]["gpu"]["power_w"] == 700.0
