"""A random-weight Whisper in CTranslate2's format, built offline in a fraction of a second.

Tests and benchmarks need the real loading and decoding path of the ASR companion without
downloading a model. The network is written with ctranslate2's own model-spec API
(ctranslate2.specs.WhisperSpec) from numpy arrays; the vocabulary is made by hand with
`tokenizers` (no transformers: transformers 5 disables torch below 2.6). What must match a real
converted large-v3 model, and does:

- the token ids: 50,257 byte-level BPE tokens (id 50256 is the empty token multilingual Whisper
  has there, which ctranslate2 4.x reads as "multilingual"), then <|endoftext|> 50257,
  <|startoftranscript|> 50258, 100 language tokens 50259-50358 (large-v3 added <|yue|>, which
  shifts every later id by one from large-v2), <|translate|> 50359, <|transcribe|> 50360,
  <|startoflm|> 50361, <|startofprev|> 50362, <|nospeech|> 50363, <|notimestamps|> 50364 and
  1501 timestamps <|0.00|>..<|30.00|> from 50365: 51,866 in all;
- config.json's lang_ids, suppress_ids_begin and alignment_heads (word timestamps need them);
- preprocessor_config.json's feature_size (128 mel bins), which faster-whisper reads.

Random weights decode garbage: every text token is a space and a made-up word, so transcripts
have words, and timestamps, and nothing to check but their structure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Whisper's language tokens in id order (large-v3: the 99 of large-v2, then yue).
# fmt: off
LANGUAGES = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv",
    "it", "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no",
    "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr",
    "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw",
    "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu",
    "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)
# fmt: on
TEXT_TOKENS = 50257  # byte-level BPE tokens, ids 0..50256
EOT = 50257
SOT = 50258
FIRST_LANGUAGE = 50259
TASKS_AND_MARKERS = (
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)
TIMESTAMPS = 1501  # 0.00 .. 30.00 s in 0.02 s steps
SPACE_TOKEN = 220  # "Ġ": a space in GPT-2's byte alphabet
ENCODER_POSITIONS = 1500  # 30 s of 10 ms frames, halved by the second convolution
DECODER_POSITIONS = 448


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int = 128
    d_model: int = 64
    heads: int = 2
    encoder_layers: int = 2
    decoder_layers: int = 2
    ffn: int = 128


TINY = WhisperDims()
# openai/whisper-large-v3-turbo's shape: what the default ASR_MODEL costs to run.
LARGE_V3_TURBO = WhisperDims(
    n_mels=128, d_model=1280, heads=20, encoder_layers=32, decoder_layers=4, ffn=5120
)


def byte_alphabet() -> list[str]:
    """GPT-2's 256 byte characters in their vocabulary order (its bytes_to_unicode)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _made_up_word(index: int) -> str:
    """A distinct lowercase word for a filler id (base 26)."""
    letters = ""
    while True:
        index, rest = divmod(index, 26)
        letters = chr(ord("a") + rest) + letters
        if index == 0:
            return letters


def vocabulary() -> list[str]:
    """All 51,866 tokens, each at its id."""
    alphabet = byte_alphabet()
    fillers = ["Ġ" + _made_up_word(i) for i in range(TEXT_TOKENS - len(alphabet) - 1)]
    text = [*alphabet, *fillers, ""]
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        *TASKS_AND_MARKERS,
    ]
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(TIMESTAMPS)]
    return [*text, *specials, *stamps]


def _tokenizer_json(tokens: list[str]) -> str:
    """tokenizer.json: a byte-level BPE over the text tokens, the rest added as special."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens[:TEXT_TOKENS])}, merges=[])
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in tokens[TEXT_TOKENS:]])
    text = tokenizer.to_str()
    check = Tokenizer.from_str(text)
    for token_id in (EOT, SOT, FIRST_LANGUAGE, len(tokens) - 1):
        if check.token_to_id(tokens[token_id]) != token_id:
            raise AssertionError(f"{tokens[token_id]} is not at id {token_id}")
    return text


def build_tiny_whisper(out_dir: Path, dims: WhisperDims = TINY, seed: int = 0) -> Path:
    """Write a random-weight Whisper (CTranslate2 format, faster-whisper's file set) into
    out_dir and return it."""
    from ctranslate2.specs import whisper_spec

    rng = np.random.default_rng(seed)
    spec = whisper_spec.WhisperSpec(
        dims.encoder_layers, dims.heads, dims.decoder_layers, dims.heads
    )
    tokens = vocabulary()
    _fill_encoder(spec.encoder, dims, rng)
    _fill_decoder(spec.decoder, dims, len(tokens), rng)
    half = dims.decoder_layers // 2
    spec.config.alignment_heads = [
        (layer, head) for layer in range(half, dims.decoder_layers) for head in range(dims.heads)
    ]
    spec.config.lang_ids = list(range(FIRST_LANGUAGE, FIRST_LANGUAGE + len(LANGUAGES)))
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [SPACE_TOKEN, EOT]
    spec.register_vocabulary(tokens)
    spec.validate()
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    (out_dir / "tokenizer.json").write_text(_tokenizer_json(tokens))
    preprocessor = {
        "feature_size": dims.n_mels,
        "sampling_rate": 16000,
        "hop_length": 160,
        "chunk_length": 30,
        "n_fft": 400,
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return out_dir


def _normal(rng: np.random.Generator, *shape: int, scale: float = 0.02) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16)


def _norm(spec: object, d: int) -> None:
    spec.gamma = np.ones(d, np.float16)  # type: ignore[attr-defined]
    spec.beta = np.zeros(d, np.float16)  # type: ignore[attr-defined]


def _linear(spec: object, rng: np.random.Generator, out: int, inp: int) -> None:
    spec.weight = _normal(rng, out, inp)  # type: ignore[attr-defined]
    spec.bias = np.zeros(out, np.float16)  # type: ignore[attr-defined]


def _ffn(spec: object, dims: WhisperDims, rng: np.random.Generator) -> None:
    _norm(spec.layer_norm, dims.d_model)  # type: ignore[attr-defined]
    _linear(spec.linear_0, rng, dims.ffn, dims.d_model)  # type: ignore[attr-defined]
    _linear(spec.linear_1, rng, dims.d_model, dims.ffn)  # type: ignore[attr-defined]


def _attention(spec: object, dims: WhisperDims, rng: np.random.Generator, cross: bool) -> None:
    d = dims.d_model
    _norm(spec.layer_norm, d)  # type: ignore[attr-defined]
    linears = spec.linear  # type: ignore[attr-defined]
    if cross:  # queries, then keys and values fused, then the output
        _linear(linears[0], rng, d, d)
        _linear(linears[1], rng, 2 * d, d)
        _linear(linears[2], rng, d, d)
    else:  # queries, keys and values fused, then the output
        _linear(linears[0], rng, 3 * d, d)
        _linear(linears[1], rng, d, d)


def _fill_encoder(spec: object, dims: WhisperDims, rng: np.random.Generator) -> None:
    d = dims.d_model
    enc: object = spec
    enc.conv1.weight = _normal(rng, d, dims.n_mels, 3)  # type: ignore[attr-defined]
    enc.conv1.bias = np.zeros(d, np.float16)  # type: ignore[attr-defined]
    enc.conv2.weight = _normal(rng, d, d, 3)  # type: ignore[attr-defined]
    enc.conv2.bias = np.zeros(d, np.float16)  # type: ignore[attr-defined]
    enc.position_encodings.encodings = _normal(rng, ENCODER_POSITIONS, d)  # type: ignore[attr-defined]
    _norm(enc.layer_norm, d)  # type: ignore[attr-defined]
    for layer in enc.layer:  # type: ignore[attr-defined]
        _attention(layer.self_attention, dims, rng, cross=False)
        _ffn(layer.ffn, dims, rng)


def _fill_decoder(spec: object, dims: WhisperDims, vocab: int, rng: np.random.Generator) -> None:
    d = dims.d_model
    dec: object = spec
    embeddings = _normal(rng, vocab, d)
    dec.embeddings.weight = embeddings  # type: ignore[attr-defined]
    dec.position_encodings.encodings = _normal(rng, DECODER_POSITIONS, d)  # type: ignore[attr-defined]
    _norm(dec.layer_norm, d)  # type: ignore[attr-defined]
    # Tied, as in Whisper; stored twice (an alias breaks CTranslate2's int8 load of it), which
    # makes large-v3-turbo's shape 1.75 GB instead of 1.62.
    dec.projection.weight = embeddings  # type: ignore[attr-defined]
    for layer in dec.layer:  # type: ignore[attr-defined]
        _attention(layer.self_attention, dims, rng, cross=False)
        _attention(layer.attention, dims, rng, cross=True)
        _ffn(layer.ffn, dims, rng)
