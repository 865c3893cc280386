"""`segtext build --tokenizer` and build(tokenizer=...): answer lengths in real Qwen2 tokens, and
tokenizers that cannot be used refused before anything is written."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from segtext import records
from segtext.cli import main
from upstream_fixtures import refer_layout


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return refer_layout(tmp_path_factory.mktemp("refer"), n_images=3)


@pytest.fixture(scope="module")
def saved_qwen(qwen_tokenizer, tmp_path_factory):
    """The real Qwen2 tokenizer saved as a save_pretrained folder (holding its tokenizer.json)."""
    where = tmp_path_factory.mktemp("qwen-saved")
    qwen_tokenizer.save_pretrained(where)
    assert (where / "tokenizer.json").is_file()
    return where


def answers(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            turns = rec.get("messages") or rec.get("completion") or rec["conversations"]
            out.append(turns[-1].get("content", turns[-1].get("value")))
    return out


def direct_stats(tok, texts):
    n = np.array([len(tok.encode(t, add_special_tokens=False)) for t in texts])
    return n, {"mean": float(n.mean()), "p95": float(np.percentile(n, 95)), "max": float(n.max())}


@pytest.mark.parametrize("style,encoding", [("messages", "rrle"), ("xsam", "rrle"), ("llava", "bsd")])
def test_build_summary_counts_real_qwen2_tokens(layout, tmp_path, qwen_tokenizer, style, encoding):
    samples = records.read_grefcoco(layout["grefcoco"], layout["grefcoco_instances"])[:40]
    out = tmp_path / "r.jsonl"
    opts = records.Options(style=style, encoding=encoding, resolution=16)
    summary = records.build(samples, out, opts, tokenizer=qwen_tokenizer)
    n, want = direct_stats(qwen_tokenizer, answers(out))
    assert len(n) == summary.written == len(samples)
    assert summary.answer_tokens == {k: pytest.approx(v, abs=1e-9) for k, v in want.items()}
    assert n.max() > n.min() > 0  # the answers differ, so the figures say something
    plain = records.build(samples, tmp_path / "same.jsonl", opts)
    assert plain.answer_tokens is None and (tmp_path / "same.jsonl").read_bytes() == out.read_bytes()


def summary_tokens(stderr):
    m = re.search(r"answer tokens: mean ([\d.]+), p95 ([\d.]+), max (\d+)", stderr)
    assert m, stderr
    return float(m.group(1)), float(m.group(2)), int(m.group(3))


@pytest.mark.parametrize("form", ["folder", "tokenizer.json"])
def test_cli_tokenizer_folder_or_file_gives_the_right_figures(layout, tmp_path, saved_qwen, qwen_tokenizer,
                                                              capsys, form):
    path = saved_qwen if form == "folder" else saved_qwen / "tokenizer.json"
    out = tmp_path / "r.jsonl"
    rc = main(["build", "refcoco", "--refs", str(layout["refcoco"]), "--instances", str(layout["refcoco_instances"]),
               "-o", str(out), "--no-progress", "--tokenizer", str(path)])
    err = capsys.readouterr().err
    assert rc == 0, err
    n, want = direct_stats(qwen_tokenizer, answers(out))
    mean, p95, top = summary_tokens(err)
    assert mean == pytest.approx(want["mean"], abs=0.05)
    assert p95 == pytest.approx(want["p95"], abs=0.05)
    assert top == int(n.max())


def _bad_paths(tmp_path, saved_qwen):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{\"not\": \"a tokenizer\"}")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is not JSON")
    return {"missing": (tmp_path / "no-such-tokenizer", "no such file or folder"),
            "empty folder": (empty, "holds no tokenizer files"),
            "broken folder": (broken, "cannot load a tokenizer"),
            "garbage file": (garbage, "cannot load a tokenizer")}


def test_cli_bad_tokenizer_path_fails_before_any_record(layout, tmp_path, saved_qwen, capsys):
    for name, (path, why) in _bad_paths(tmp_path, saved_qwen).items():
        out = tmp_path / f"{name.replace(' ', '_')}.jsonl"
        rc = main(["build", "refcoco", "--refs", str(layout["refcoco"]), "--instances",
                   str(layout["refcoco_instances"]), "-o", str(out), "--no-progress", "--tokenizer", str(path)])
        err = capsys.readouterr().err
        assert rc == 2, (name, err)
        assert str(path) in err and why in err, (name, err)
        assert err.count("\n") == 1, err  # one line, no traceback
        assert not out.exists() and not (tmp_path / (out.name + ".partial")).exists(), name


def test_build_refuses_an_unusable_tokenizer_before_writing(layout, tmp_path):
    samples = records.read_refcoco(layout["refcoco"], layout["refcoco_instances"])[:5]
    out = tmp_path / "r.jsonl"
    with pytest.raises(TypeError, match="tokenizer must be"):
        records.build(samples, out, records.Options(), tokenizer=object())

    class Broken:
        def encode(self, text, add_special_tokens=True):
            raise RuntimeError("no vocabulary")

    with pytest.raises(ValueError, match="no vocabulary"):
        records.build(samples, out, records.Options(), tokenizer=Broken())
    with pytest.raises(ValueError, match="token counts"):
        records.build(samples, out, records.Options(), tokenizer=lambda text: [])
    assert not out.exists() and not (tmp_path / "r.jsonl.partial").exists()
