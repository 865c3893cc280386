"""The logits processors inside ``model.generate``: a tiny random Qwen2 with Qwen2's real tokenizer.

Sampling at temperature 1.0 from a random model is close to a uniform walk over whatever the
processor allows, which is the hardest test of it: every answer must decode in strict mode.
Without the processor almost none would (the contrast is printed).
"""

from __future__ import annotations

import pytest

import segtext as st

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from transformers import LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from segtext.constrain import BSDLogitsProcessor, RRLELogitsProcessor  # noqa: E402
from segtext.tokens import add_format_tokens  # noqa: E402

LABELS = ["others", "dog", "traffic light"]


def tiny_qwen2(vocab_size, tok, seed=0):
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model(qwen_tokenizer):
    return tiny_qwen2(151936, qwen_tokenizer)  # as many rows as released Qwen2 checkpoints


def _prompts(tok, texts):
    tok.padding_side = "left"
    return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)


def _answers(tok, out, prompt_len):
    return [tok.decode(row[prompt_len:], skip_special_tokens=True) for row in out]


def _strict_ok(text, size):
    try:
        res = st.decode_rrle(text, LABELS, size, mode="strict")
    except st.DecodeError:
        return False
    return res.grid.shape == size


def _sampled(tok, model, capsys, size, batch, batches):
    """Sampling costs ~4 ms per row and step in torch.multinomial over 151,936 ids on this CPU."""
    proc = RRLELogitsProcessor(tok, LABELS, size)
    enc = _prompts(tok, ["<|im_start|>user\nSegment the dog.<|im_end|>\n<|im_start|>assistant\n"] * batch)
    good = total = 0
    with torch.no_grad():
        for seed in range(batches):
            torch.manual_seed(seed)
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=160,
                                 logits_processor=LogitsProcessorList([proc]))
            for text in _answers(tok, out, enc.input_ids.shape[1]):
                total += 1
                good += _strict_ok(text, size)
                assert text.startswith("<seg>") and text.endswith("</seg>")
    assert (good, total) == (batch * batches, batch * batches)
    assert proc.refused == 0
    # the contrast: the same model without the processor
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=40)
    free = sum(_strict_ok(t, size) for t in _answers(tok, out, enc.input_ids.shape[1]))
    with capsys.disabled():
        print(f"\n  constrained: {good}/{total} decode strictly; unconstrained: {free}/{batch}")
    assert free < batch


def test_sampled_answers_all_decode(qwen_tokenizer, model, capsys):
    _sampled(qwen_tokenizer, model, capsys, (3, 4), 16, 2)


@pytest.mark.slow
def test_200_sampled_answers_all_decode(qwen_tokenizer, model, capsys):
    _sampled(qwen_tokenizer, model, capsys, (4, 4), 50, 4)


def test_beam_search_and_padded_batches(qwen_tokenizer, model):
    tok = qwen_tokenizer
    size = (3, 5)
    proc = RRLELogitsProcessor(tok, LABELS, size, canonical=True, start="seg", max_prefix_tokens=12)
    prompts = ["Segment the dog.", "Where is the traffic light in this picture? Answer with a mask.",
               "dog", "Find every dog and every traffic light, then write the mask."]
    enc = _prompts(tok, prompts)
    assert (enc.attention_mask == 0).any()  # left padding present
    with torch.no_grad():
        beams = model.generate(**enc, num_beams=3, num_return_sequences=2, do_sample=False, max_new_tokens=130,
                               logits_processor=LogitsProcessorList([proc]))
        sampled = model.generate(**enc, do_sample=True, top_k=0, num_return_sequences=3, max_new_tokens=130,
                                 logits_processor=LogitsProcessorList([proc]))
        greedy = model.generate(**enc, do_sample=False, max_new_tokens=130, logits_processor=LogitsProcessorList([proc]))
    for out, n in ((beams, 8), (sampled, 12), (greedy, 4)):
        texts = _answers(tok, out, enc.input_ids.shape[1])
        assert len(texts) == n
        for text in texts:
            res = st.decode_rrle(text, LABELS, size, mode="strict")
            assert "<seg>" + st.encode_rrle(res.grid, LABELS) + "</seg>" in text  # canonical runs
    assert proc.refused == 0


def test_bsd_sampled_answers_decode(qwen_tokenizer):
    import copy

    tok = copy.deepcopy(qwen_tokenizer)
    add_format_tokens(tok, ("bsd",), max_run=15)
    model = tiny_qwen2(len(tok), tok, seed=1)
    proc = BSDLogitsProcessor(tok, ["dog", "traffic light"], resolution=4, max_run=15, max_objects=2)
    enc = _prompts(tok, ["Segment the dogs."] * 8)
    with torch.no_grad():
        torch.manual_seed(0)
        out = model.generate(**enc, do_sample=True, top_k=0, max_new_tokens=120, logits_processor=LogitsProcessorList([proc]))
    for text in _answers(tok, out, enc.input_ids.shape[1]):
        res = st.decode_bsd(text, (48, 64), resolution=4, max_run=15, mode="strict")
        assert 1 <= len(res.objects) <= 2 and res.ok
        for obj in res.objects:
            assert obj.label in ("dog", "traffic light")
    assert proc.refused == 0


def test_processor_follows_rows_and_resets(qwen_tokenizer):
    """Row states follow the generated ids (reordered rows, a new prompt), without a model."""
    tok = qwen_tokenizer
    proc = RRLELogitsProcessor(tok, ["others", "dog"], (1, 2))
    prompt = torch.tensor([[1, 2, 3], [1, 2, 3]])  # two beams of one prompt
    a = tok("<seg>dog *2\n</seg>", add_special_tokens=False).input_ids
    b = tok("<seg>others *2\n</seg>", add_special_tokens=False).input_ids
    assert len(a) == len(b) and a != b
    V = 151936
    ids = prompt
    for i in range(len(a)):
        scores = proc(ids, torch.zeros(2, V))
        for r in range(2):  # each row is allowed its own next token
            want = a[i] if ids[r].tolist()[3:] == a[:i] else b[i]
            assert torch.isfinite(scores[r, want])
        assert torch.isinf(scores[:, V - 1]).all()  # ids past the tokenizer: never allowed
        ids = torch.cat([ids, torch.tensor([[a[i]], [b[i]]])], 1)
        ids = ids.flip(0)  # beams reorder rows between steps
    scores = proc(ids, torch.zeros(2, V))
    assert torch.isfinite(scores[:, tok.eos_token_id]).all() and int(torch.isfinite(scores[0]).sum()) == 1
    # finished rows: left alone (generate pads them)
    ids = torch.cat([ids, torch.full((2, 1), tok.eos_token_id)], 1)
    assert torch.isfinite(proc(ids, torch.zeros(2, V))).all()
    # a new prompt starts a new generation
    scores = proc(torch.tensor([[9, 9]]), torch.zeros(1, V))
    allowed = torch.nonzero(torch.isfinite(scores[0])).flatten().tolist()
    assert all(tok.decode([i]).startswith("<") for i in allowed)
    # a token the grammar refused (forced by something else): only EOS from then on
    bad = tok("x", add_special_tokens=False).input_ids
    proc(torch.tensor([[9, 9]]), torch.zeros(1, V))
    scores = proc(torch.tensor([[9, 9, bad[0]]]), torch.zeros(1, V))
    assert torch.nonzero(torch.isfinite(scores[0])).flatten().tolist() == [tok.eos_token_id]
    assert proc.refused == 1
    with pytest.raises(ValueError, match="batch, length"):
        proc(torch.tensor([1, 2]), torch.zeros(1, V))
