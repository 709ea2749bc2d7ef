"""Frozen backbones of the kinds `trainer.onnx` names (text and images by default) run through ONNX Runtime on the
CPU: exported once into the competition's cache folder, then read alike by training and by predict, so that both
compute the same embeddings (ONNX Runtime's differ from torch's by ~1e-6).

Measured on the 2-core CPU (torch 2.14, onnxruntime 1.32, `benchmarks/bench_onnx.py`, reading and tokenizing
included): all-MiniLM-L6-v2 over rotten's 2,551 test texts, 5.5 s instead of 8.9 s; EfficientNet-Lite0 over mnist's
1,000 test images at 160 px, 2.3 s instead of 7.6 s. Exporting takes ~5 s, once per backbone. An export that fails,
or that strays from torch on a probe batch, is not used: torch embeds instead. A text backbone's tokenizer is saved
beside it as the `tokenizers` library runs it, when it gives training's tokens exactly: predict then needs no
transformers (~0.7 s of its start).
"""

import importlib.util
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.artifacts import atomic_write
from pipeline.choices import ModelKind

log = logging.getLogger(__name__)
TOLERANCE = 1e-4  # the largest difference from torch on the probe batch, relative to its largest feature


class OnnxEncoder(nn.Module):
    """An exported backbone behind the torch module's call: (token ids, attention mask) or an image batch."""

    def __init__(self, path: Path):
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()  # the job's share of the cores (train.py)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # done: the cores go back at once
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        # on the CPU, as in training, also where a GPU machine predicts with a CPU-trained member
        feed = {name: x.cpu().contiguous().numpy() for name, x in zip(self.names, inputs, strict=True)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def usable(module: nn.Module) -> bool:
    """ONNX Runtime is installed, the embeddings are computed on the CPU, and the backbone has weights (the
    `pixels` backbone has none: nothing to gain)."""
    return (
        not torch.cuda.is_available()
        and importlib.util.find_spec("onnxruntime") is not None
        and any(p.numel() for p in module.parameters())
    )


def probe(kind: str, input_size: int | None, batch: int, length: int) -> tuple[torch.Tensor, ...]:
    """A batch of the backbone's inputs: token ids with a padded row, or random images (channels last)."""
    if kind == ModelKind.TEXT:
        ids, mask = torch.randint(5, 100, (batch, length)), torch.ones(batch, length, dtype=torch.long)
        mask[-1, length // 2 :] = 0
        return ids, mask
    images = torch.randn(batch, 3, input_size, input_size)
    return (images.contiguous(memory_format=torch.channels_last),)


def export(module: nn.Module, kind: str, input_size: int | None, path: Path) -> Path | None:
    """`module` as an ONNX file at `path` (any batch size; any text length), checked against torch on a batch of
    another shape; None (and a warning) when it cannot be exported or strays, so that torch embeds."""
    module.eval()
    dims = {0: torch.export.Dim("batch")}
    if kind == ModelKind.TEXT:
        dims[1] = torch.export.Dim("length")
    args = probe(kind, input_size, 2, 16)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on dimension names and deprecations
            atomic_write(
                path,
                lambda tmp: torch.onnx.export(
                    module, args, tmp, dynamic_shapes=tuple(dims for _ in args), external_data=False, verbose=False
                ),
            )
        inputs = probe(kind, input_size, 3, 24)
        with torch.no_grad():
            want = module(*inputs)
        error = float((OnnxEncoder(path)(*inputs) - want).abs().max() / want.abs().max().clamp(min=1e-12))
    except Exception as e:  # an architecture or operator the exporter does not cover
        path.unlink(missing_ok=True)
        log.warning("ONNX export of the backbone failed (%s: %s): torch embeds instead", type(e).__name__, e)
        return None
    if error > TOLERANCE:
        path.unlink()
        log.warning("the backbone's ONNX export differs from torch by %.1e (relative): torch embeds instead", error)
        return None
    log.info("backbone exported to %s (%.0f MB; %.1e from torch)", path, path.stat().st_size / 1e6, error)
    return path


class FastTokenizer:
    """A `tokenizers` tokenizer (truncation and padding set to its max_length), called as `pipeline.data.text`
    calls a transformers one."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    @classmethod
    def load(cls, path: Path) -> "FastTokenizer":
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        return cls(tokenizer, tokenizer.truncation["max_length"])

    def __call__(self, texts: list[str], max_length: int, **_) -> dict[str, torch.Tensor]:
        if max_length != self.max_length:
            raise ValueError(f"this tokenizer was saved for max_length={self.max_length}, not {max_length}")
        encodings = self.tokenizer.encode_batch(texts)
        return {
            "input_ids": torch.tensor([e.ids for e in encodings]),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings]),
        }


def save_tokenizer(tokenizer, max_length: int, texts: list[str], tokens: dict, path: Path) -> Path | None:
    """`tokenizer`'s fast backend at `path`, set up as transformers sets it for `max_length`, when it gives `tokens`
    for `texts` exactly; None (transformers tokenizes in predict) for a tokenizer without one, or one that differs."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    fast = Tokenizer.from_str(backend.to_str())
    fast.enable_truncation(max_length, direction=tokenizer.truncation_side)
    pad = {
        "pad_id": tokenizer.pad_token_id,
        "pad_type_id": tokenizer.pad_token_type_id,
        "pad_token": tokenizer.pad_token,
    }
    fast.enable_padding(length=max_length, direction=tokenizer.padding_side, **pad)
    got = FastTokenizer(fast, max_length)(texts, max_length)
    if not all(torch.equal(got[k], tokens[k]) for k in ("input_ids", "attention_mask")):
        log.info("the tokenizers library tokenizes these texts unlike transformers: predict uses transformers")
        return None
    return atomic_write(path, lambda tmp: fast.save(str(tmp)))
