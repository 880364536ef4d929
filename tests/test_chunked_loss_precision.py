"""The chunked losses are as precise as the plain formulas, in fp32 and in bf16.

Reference: the plain formula in float64 on the very same inputs (the embeddings rounded to the
tested dtype, logit scale and bias to float32 as the model holds them). Every error is relative,
‖got − reference‖ / ‖reference‖, for the loss and for the gradient of each input. Where a rounding
lands is luck: the plain fp32 InfoNCE of one seed can be 10× closer to the reference than that of
the next. So the errors are root-mean-squared over several seeds before the chunked one is held to
at most twice the plain one, plus one float32 rounding so that two exact results always pass.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from vlalign.align.losses import LOSSES, USES_BIAS

SEEDS = range(8)
FLOOR = torch.finfo(torch.float32).eps
# Easy: positives well above the negatives at logit scale 100, so most pairs' loss is ≪ 1 and the
# old chunked InfoNCE, a difference of two log-sum-exps near 100, lost it. Hard: random captions.
BLOCKS = {"easy": (1.0, 100.0), "hard": (None, 20.0)}


def _inputs(block: str, n: int, dim: int, seed: int, extra: int = 0, negatives: int = 0) -> dict:
    """float64 embeddings; `block` says how the captions relate to the images, and the logit scale."""
    noise, scale = BLOCKS[block]
    g = torch.Generator().manual_seed(seed)

    def unit(x):
        return F.normalize(x, dim=1)

    def random(rows):
        return unit(torch.randn(rows, dim, generator=g, dtype=torch.float64))

    def captions_of(img):
        if noise is None:
            return random(len(img))
        return unit(img + noise / math.sqrt(dim) * torch.randn(img.shape, generator=g, dtype=torch.float64))

    img = random(n)
    return {"img": img, "txt": captions_of(img), "log_scale": torch.tensor(math.log(scale), dtype=torch.float64),
            "bias": torch.tensor(-10.0, dtype=torch.float64), "extra": [captions_of(img) for _ in range(extra)],
            "negatives": random(negatives) if negatives else None}  # fmt: skip


def _value_and_grads(loss_name: str, inputs: dict, dtype: torch.dtype, chunk_size: int | None) -> dict:
    """The loss and the gradient of every input, as float64, with the embeddings in `dtype`: the
    logit scale and bias are float32 like the model's parameters (float64 for the reference)."""
    params_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    embeddings = {key: inputs[key].to(dtype).requires_grad_() for key in ("img", "txt")}
    params = {key: inputs[key].to(params_dtype).requires_grad_() for key in ("log_scale", "bias")}
    extra = [t.to(dtype).requires_grad_() for t in inputs["extra"]]
    negatives = None if inputs["negatives"] is None else inputs["negatives"].to(dtype).requires_grad_()
    loss = LOSSES[loss_name](embeddings["img"], embeddings["txt"], params["log_scale"], params["bias"], extra_txt=extra,
                             chunk_size=chunk_size, negatives=negatives)  # fmt: skip
    loss.backward()
    named = {**embeddings, "log_scale": params["log_scale"], **{f"extra{i}": t for i, t in enumerate(extra)}}
    if loss_name in USES_BIAS:
        named["bias"] = params["bias"]
    if negatives is not None:
        named["negatives"] = negatives
    return {"loss": loss.detach().double(), **{name: t.grad.double() for name, t in named.items()}}


def _rounded(inputs: dict, dtype: torch.dtype) -> dict:
    """The inputs exactly as the tested dtype sees them (scale and bias as float32), back in float64."""

    def rounded(t, to=dtype):
        return None if t is None else t.to(to).double()

    return {"img": rounded(inputs["img"]), "txt": rounded(inputs["txt"]),
            "log_scale": rounded(inputs["log_scale"], torch.float32), "bias": rounded(inputs["bias"], torch.float32),
            "extra": [rounded(t) for t in inputs["extra"]], "negatives": rounded(inputs["negatives"])}  # fmt: skip


def _relative_errors(got: dict, reference: dict) -> dict:
    return {name: float((got[name] - ref).norm() / ref.norm()) for name, ref in reference.items()}


def _rms_errors(loss_name, dtype, chunk_size, cases) -> dict:
    """Per quantity, the root-mean-square over `cases` of the relative error against float64."""
    squares = {}
    for inputs in cases:
        reference = _value_and_grads(loss_name, _rounded(inputs, dtype), torch.float64, chunk_size=None)
        got = _value_and_grads(loss_name, inputs, dtype, chunk_size)
        for name, error in _relative_errors(got, reference).items():
            squares.setdefault(name, []).append(error**2)
    return {name: math.sqrt(sum(values) / len(values)) for name, values in squares.items()}


def _assert_chunked_as_precise_as_plain(loss_name, dtype, chunk, cases):
    plain = _rms_errors(loss_name, dtype, None, cases)
    chunked = _rms_errors(loss_name, dtype, chunk, cases)
    worse = {name: f"chunked {chunked[name]:.2e} vs plain {plain[name]:.2e}" for name in plain
             if chunked[name] > 2 * plain[name] + FLOOR}  # fmt: skip
    assert not worse, worse


@pytest.mark.parametrize("loss_name", ["infonce", "siglip"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("block", ["easy", "hard"])
@pytest.mark.parametrize("n, chunk", [(100, 7), (512, 96)])
def test_chunked_is_as_precise_as_plain(loss_name, dtype, block, n, chunk):
    cases = [_inputs(block, n, 32, seed) for seed in SEEDS]
    _assert_chunked_as_precise_as_plain(loss_name, dtype, chunk, cases)


@pytest.mark.parametrize("loss_name", ["infonce", "siglip"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_extra_positives_and_hard_negatives_are_as_precise_as_plain(loss_name, dtype):
    # 53 hard negatives: neither they nor the 100 pairs fill whole chunks of 8.
    cases = [_inputs("easy", 100, 32, seed, extra=1, negatives=53) for seed in SEEDS]
    _assert_chunked_as_precise_as_plain(loss_name, dtype, 8, cases)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_give_a_float32_loss_and_gradients_in_their_own_dtype(dtype):
    inputs = _inputs("easy", 40, 16, seed=0)
    img, txt = (inputs[key].to(dtype).requires_grad_() for key in ("img", "txt"))
    log_scale, bias = (inputs[key].float().requires_grad_() for key in ("log_scale", "bias"))
    for loss_name in LOSSES:
        loss = LOSSES[loss_name](img, txt, log_scale, bias, chunk_size=16)
        assert loss.dtype == torch.float32
        img_grad, scale_grad = torch.autograd.grad(loss, [img, log_scale])
        assert img_grad.dtype == dtype and scale_grad.dtype == torch.float32
