"""segtext.records at scale: the Hugging Face datasets path (Dataset.map, num_proc) and the Ray Data
backend of build, each checked to give exactly the records build writes in one process."""

from __future__ import annotations

import json
import os

import pytest

from segtext import records
from upstream_fixtures import refer_layout


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return refer_layout(tmp_path_factory.mktemp("refer"))


@pytest.fixture(scope="module")
def samples(layout):
    return records.read_grefcoco(layout["grefcoco"], layout["grefcoco_instances"])


def test_sample_dicts_round_trip(samples, layout):
    sem = records.read_coco(layout["refcoco_instances"], "semantic")
    for s in [*samples, *sem]:
        d = records.sample_to_dict(s)
        assert records.sample_from_dict(json.loads(json.dumps(d))) == s
    with pytest.raises(ValueError, match="not a sample dict"):
        records.sample_from_dict({"id": "x"})


@pytest.mark.parametrize("style", ["messages", "llava", "prompt-completion"])
def test_hf_map_gives_the_records_build_writes(samples, tmp_path, style):
    datasets = pytest.importorskip("datasets")
    from segtext.records.hf import records_batch, to_hf_dataset

    options = records.Options(style=style, encoding="bsd", resolution=32)
    out = tmp_path / "r.jsonl"
    records.build(samples, out, options, seed=3)
    want = out.read_text(encoding="utf-8").splitlines()
    ds = to_hf_dataset(samples)
    assert isinstance(ds, datasets.Dataset) and ds["id"] == [s.id for s in samples]
    mapped = ds.map(records_batch, batched=True, batch_size=8, num_proc=2, remove_columns=["sample"],
                    fn_kwargs={"options": options, "seed": 3})
    assert mapped["record"] == want
    first = json.loads(want[0])
    key = {"messages": "messages", "llava": "conversations", "prompt-completion": "completion"}[style]
    assert mapped[0][key] == first[key]


def test_hf_skip_invalid_marks_the_sample(tmp_path):
    pytest.importorskip("datasets")
    from segtext.records.hf import records_batch, to_hf_dataset

    good = records.Sample("g", "referring", "a.jpg", 1, (2, 2), [records.Target("cat", {"size": [2, 2], "counts": [0, 4]})], "cat")
    bad = records.Sample("b", "referring", "a.jpg", 1, (2, 2), [records.Target("a | b", {"size": [2, 2], "counts": [0, 4]})], "a | b")
    ds = to_hf_dataset([good, bad])
    with pytest.raises(ValueError, match="sample b"):
        ds.map(records_batch, batched=True, fn_kwargs={"options": records.Options(grid_size=1)})
    out = ds.map(records_batch, batched=True, fn_kwargs={"options": records.Options(grid_size=1), "skip_invalid": True})
    assert out["record"][1] is None and "sample b" in out["problem"][1] and out["record"][0] is not None


def test_ray_backend_needs_ray_started(samples, tmp_path):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session is running in this process")
    with pytest.raises(ValueError, match="ray.init"):
        records.build(samples, tmp_path / "x.jsonl", records.Options(), backend="ray")
    assert not (tmp_path / "x.jsonl.partial").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="backend"):
        records.build(samples, tmp_path / "y.jsonl", records.Options(), backend="spark")


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if os.environ.get("NUMBA_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()


def test_ray_backend_writes_the_same_bytes(samples, tmp_path, ray_local, monkeypatch):
    import importlib

    builder = importlib.import_module("segtext.records.builder")
    monkeypatch.setattr(builder, "CHUNK", 9)  # several blocks for Ray to spread
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    records.build(samples, local, records.Options())
    summary = records.build(samples, distributed, records.Options(), backend="ray")
    assert distributed.read_bytes() == local.read_bytes() and summary.records == len(samples)


def test_cli_build_on_a_local_ray(layout, tmp_path):
    pytest.importorskip("ray")
    import subprocess
    import sys

    args = [sys.executable, "-m", "segtext", "build", "grefcoco", "--refs", str(layout["grefcoco"]),
            "--instances", str(layout["grefcoco_instances"]), "--no-progress"]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    plain, on_ray = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert subprocess.run([*args, "-o", str(plain)], capture_output=True, env=env).returncode == 0
    r = subprocess.run([*args, "-o", str(on_ray), "--ray", "local"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert on_ray.read_bytes() == plain.read_bytes()


def test_import_segtext_needs_no_optional_extra():
    import subprocess
    import sys

    code = ("import sys, segtext, segtext.records, segtext.records.hf, segtext.cli, segtext.tokens, "
            "segtext.constrain, segtext.grammar; "
            "extras = ('datasets', 'ray', 'pyarrow', 'pandas', 'torch', 'transformers', 'tokenizers', 'peft', "
            "'llguidance'); "
            "print([m for m in extras if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
