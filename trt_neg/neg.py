"""NEG (Native Entropy Gating) reference in torch.

This module is the executable form of DESIGN.md section 4 and the oracle every other
implementation (C++ host library, CUDA kernel, TensorRT plugin, engine) is tested
against.  All maths runs in fp32 whatever the input dtype; rows are independent.

Decisions where section 4 is silent are listed in ``docs/neg.md`` and repeated at the
place they are implemented:

* NaN logits are treated as -inf everywhere (argmax, top-k, guided logits).
* Top-k order is the strict total order (logit desc, id asc); ``k = min(top_k, V)``.
* ``p = softmax(z_keep / T)`` in fp32; the cumulative sum is taken in candidate order and
  ``sum(p)`` is its last element, so the target ``u * sum(p)`` is always compared with
  the same numbers that define the boundaries.
* If +inf logits are among the candidates they share the probability equally (the limit
  of the softmax); finite candidates get 0.
* The "last candidate" fallback (only reachable through rounding of ``u * sum``) is the
  last candidate with non-zero probability; if no candidate has non-zero probability
  (every logit is -inf/NaN) the token is the first candidate (= argmax = lowest id).
* Guided logits: when fired, -inf everywhere and 0.0 at the chosen token (0.0 rather
  than the original logit so a -inf/+inf original cannot leak into a downstream
  softmax).  When not fired: the base logits with NaN replaced by -inf, except rows
  whose logits would break a downstream sampler (no finite logit, or a +inf logit):
  those get the same one-hot form around the argmax token.
* ``status`` is a bit set (see :class:`NegStatus`).
"""

from __future__ import annotations

import enum
import math
import operator
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .config import to_float32

__all__ = [
    "ACTIVATIONS",
    "NegStatus",
    "NegWeights",
    "NegStepOutput",
    "neg_head",
    "gate",
    "philox4x32_10",
    "philox4x32_10_torch",
    "philox_uniform",
    "gated_topk_sample",
    "neg_step",
    "neg_step_fast",
    "TENSOR_NAMES",
]

# Checkpoint tensor names (DESIGN.md section 4).
TENSOR_NAMES = {
    "fc1_weight": "neg_head.fc1.weight",
    "fc1_bias": "neg_head.fc1.bias",
    "fc2_weight": "neg_head.fc2.weight",
    "fc2_bias": "neg_head.fc2.bias",
    "threshold": "neg_gate.threshold",
}


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU written out as negMath.h evaluates it: torch's F.gelu overflows to inf from
    about 1.7e38 and gives NaN for +inf in a tensor of two or more elements (one element: inf),
    where this formula gives x, as the kernels do."""
    return 0.5 * x * (1.0 + torch.erf(x * 0.70710678118654752))


# Activation names accepted for neg_config.activation.  The integer codes are the ones
# the C++/CUDA code and the TensorRT plugin field ``activation`` use (negMath.h).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": _gelu_erf,  # exact (erf) GELU
    "relu": F.relu,
    "gelu_tanh": _gelu_tanh,
}
ACTIVATION_CODES = {"silu": 0, "gelu": 1, "relu": 2, "gelu_tanh": 3}
# Common aliases in HF configs.
ACTIVATION_ALIASES = {"swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}


def canonical_activation(name: str) -> str:
    """Return the canonical activation name, or raise naming the accepted ones."""
    key = str(name).lower()
    key = ACTIVATION_ALIASES.get(key, key)
    if key not in ACTIVATIONS:
        raise ValueError(
            f"activation: unknown activation {name!r}; accepted: "
            f"{sorted(ACTIVATIONS) + sorted(ACTIVATION_ALIASES)}"
        )
    return key


class NegStatus(enum.IntFlag):
    """Per-row status bits (a row's status is the OR of the bits that apply)."""

    OK = 0
    NO_FINITE_LOGIT = 1  # every logit is NaN or +-inf: token is still defined
    POS_INF_LOGIT = 2  # some logit is +inf: sampling restricted to the +inf entries
    NAN_ENTROPY = 4  # H_hat is NaN: the gate does not fire


# --------------------------------------------------------------------------- weights


@dataclass
class NegWeights:
    """NEG-Head and gate parameters (shapes: W1 [d,H], b1 [d], w2 [d] or [1,d], b2 [] or [1])."""

    fc1_weight: torch.Tensor
    fc1_bias: torch.Tensor
    fc2_weight: torch.Tensor
    fc2_bias: torch.Tensor
    threshold: torch.Tensor

    def __post_init__(self) -> None:
        t = {k: getattr(self, k) for k in TENSOR_NAMES}
        for k, v in t.items():
            if not isinstance(v, torch.Tensor):
                setattr(self, k, torch.as_tensor(v, dtype=torch.float32))
        w1 = self.fc1_weight
        if w1.dim() != 2:
            raise ValueError(f"{TENSOR_NAMES['fc1_weight']}: expected 2-D [d, H], got shape {tuple(w1.shape)}")
        d = w1.shape[0]
        if tuple(self.fc1_bias.shape) != (d,):
            raise ValueError(f"{TENSOR_NAMES['fc1_bias']}: expected shape ({d},), got {tuple(self.fc1_bias.shape)}")
        if self.fc2_weight.numel() != d or self.fc2_weight.dim() not in (1, 2) or (
            self.fc2_weight.dim() == 2 and self.fc2_weight.shape[0] != 1
        ):
            raise ValueError(
                f"{TENSOR_NAMES['fc2_weight']}: expected shape ({d},) or (1, {d}), got {tuple(self.fc2_weight.shape)}"
            )
        if self.fc2_bias.numel() != 1:
            raise ValueError(f"{TENSOR_NAMES['fc2_bias']}: expected a scalar or shape (1,), got {tuple(self.fc2_bias.shape)}")
        if self.threshold.numel() != 1:
            raise ValueError(f"{TENSOR_NAMES['threshold']}: expected a scalar or shape (1,), got {tuple(self.threshold.shape)}")
        for k, v in {k: getattr(self, k) for k in TENSOR_NAMES}.items():
            if not v.is_floating_point():
                raise TypeError(f"{TENSOR_NAMES[k]}: expected a floating-point tensor, got {v.dtype}")

    @property
    def hidden_size(self) -> int:
        return int(self.fc1_weight.shape[1])

    @property
    def head_hidden_size(self) -> int:
        return int(self.fc1_weight.shape[0])

    @property
    def tau(self) -> float:
        return float(self.threshold.reshape(()).float())

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], prefix: str = "") -> "NegWeights":
        """Build from tensors named as in DESIGN.md section 4 (optionally under ``prefix``)."""
        kwargs = {}
        for field, name in TENSOR_NAMES.items():
            key = prefix + name
            if key not in sd:
                raise KeyError(f"NEG weights: missing tensor {key!r}")
            kwargs[field] = sd[key]
        return cls(**kwargs)

    def to(self, device=None, dtype=None) -> "NegWeights":
        return NegWeights(**{k: getattr(self, k).to(device=device, dtype=dtype) for k in TENSOR_NAMES})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, field) for field, name in TENSOR_NAMES.items()}


# ------------------------------------------------------------------------- NEG-Head


def neg_head(hidden: torch.Tensor, weights: NegWeights, activation: str = "silu") -> torch.Tensor:
    """Predicted entropy H_hat [N] (fp32, nats) = softplus(w2 . act(W1 h + b1) + b2).

    ``hidden`` is [N, H] (or [H]) in any float dtype: the hidden state after the final
    norm.  Math in fp32.
    """
    act = ACTIVATIONS[canonical_activation(activation)]
    if not isinstance(hidden, torch.Tensor) or not hidden.is_floating_point():
        raise TypeError("hidden: expected a floating-point tensor")
    squeeze = hidden.dim() == 1
    h = hidden.reshape(1, -1) if squeeze else hidden
    if h.dim() != 2:
        raise ValueError(f"hidden: expected shape [N, H], got {tuple(hidden.shape)}")
    if h.shape[1] != weights.hidden_size:
        raise ValueError(f"hidden: last dimension {h.shape[1]} != NEG-Head hidden_size {weights.hidden_size}")
    dev = h.device
    w1 = weights.fc1_weight.to(dev, torch.float32)
    b1 = weights.fc1_bias.to(dev, torch.float32)
    w2 = weights.fc2_weight.to(dev, torch.float32).reshape(-1)
    b2 = weights.fc2_bias.to(dev, torch.float32).reshape(())
    a = act(torch.addmm(b1, h.float(), w1.t()))
    s = a @ w2 + b2
    out = F.softplus(s)  # beta=1, threshold=20: x > 20 -> x, else log1p(exp(x))
    return out.reshape(()) if squeeze else out


def threshold_scalar(threshold, device=None) -> torch.Tensor:
    """tau as a 0-d fp32 tensor: one value (a number, or a tensor of one element), else ValueError."""
    tau = torch.as_tensor(threshold, dtype=torch.float32, device=device)
    if tau.numel() != 1:
        raise ValueError(f"threshold: expected one value, got shape {tuple(tau.shape)}")
    return tau.reshape(())


def gate(entropy: torch.Tensor, threshold) -> torch.Tensor:
    """NEG-Gate: fires when H_hat > tau strictly; NaN never fires (comparison is False)."""
    return entropy.float() > threshold_scalar(threshold, entropy.device)


# --------------------------------------------------------------------------- Philox

_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def philox4x32_10(counter: Sequence[int], key: Sequence[int]) -> tuple[int, int, int, int]:
    """Philox4x32-10 on pure Python ints (Random123's ``philox4x32`` with 10 rounds)."""
    c0, c1, c2, c3 = (int(x) & _MASK32 for x in counter)
    k0, k1 = (int(x) & _MASK32 for x in key)
    for r in range(10):
        if r:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & _MASK32, (p0 >> 32) ^ c3 ^ k1, p0 & _MASK32)
    return c0, c1, c2, c3


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of a*b for a 32-bit constant and an int64 tensor of uint32s.

    Split the constant into 16-bit halves so every partial product fits in int64.
    """
    a_lo, a_hi = a & 0xFFFF, a >> 16
    p_lo = b * a_lo  # < 2^48
    p_hi = b * a_hi  # < 2^48
    # a*b = p_hi * 2^16 + p_lo
    lo_full = (p_lo & _MASK32) + ((p_hi & 0xFFFF) << 16)
    lo = lo_full & _MASK32
    hi = (p_hi >> 16) + (p_lo >> 32) + (lo_full >> 32)
    return hi & _MASK32, lo


def philox4x32_10_torch(counter: Sequence[torch.Tensor], key: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Vectorised Philox4x32-10: each word an int64 tensor holding uint32 values."""
    c0, c1, c2, c3 = (torch.as_tensor(x, dtype=torch.int64) & _MASK32 for x in counter)
    k0, k1 = (torch.as_tensor(x, dtype=torch.int64) & _MASK32 for x in key)
    for r in range(10):
        if r:
            k0 = (k0 + _W0) & _MASK32
            k1 = (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo32(_M0, c0)
        hi1, lo1 = _mulhilo32(_M1, c2)
        c0, c1, c2, c3 = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
    return c0, c1, c2, c3


_TWO_M24 = 2.0**-24
_SCALAR_PHILOX_MAX = 64  # up to this many draws, Python ints beat the vectorised torch version


def philox_uniform(seed: Union[int, torch.Tensor], offset: Union[int, torch.Tensor]):
    """u in [0, 1) from Philox4x32-10 with key = 64-bit seed, counter = (64-bit offset, 0, 0).

    ``u = (x0 >> 8) * 2^-24`` is exact in fp32.  Seeds and offsets are taken modulo 2^64
    (a negative int64 seed means its two's-complement bits).  With Python ints returns a
    float; with tensors returns an fp32 tensor.
    """
    if isinstance(seed, torch.Tensor) or isinstance(offset, torch.Tensor):
        s, o = int64_tensor(seed, "seed"), int64_tensor(offset, "offset")
        s, o = torch.broadcast_tensors(s, o)
        dev = s.device
        s, o = s.cpu(), o.cpu()
        if s.numel() <= _SCALAR_PHILOX_MAX:
            # The same integers one by one: ~100 tiny tensor ops cost ~0.7 ms whatever the size,
            # Python ints ~6 us a draw.
            u = [philox_uniform(a, b) for a, b in zip(s.reshape(-1).tolist(), o.reshape(-1).tolist())]
            return torch.tensor(u, dtype=torch.float32).reshape(s.shape).to(dev)
        zero = torch.zeros_like(o)
        # `>> 32` on int64 is arithmetic; the mask keeps the two's-complement high word.
        x0, _, _, _ = philox4x32_10_torch(
            (o & _MASK32, (o >> 32) & _MASK32, zero, zero), (s & _MASK32, (s >> 32) & _MASK32)
        )
        return ((x0 >> 8).to(torch.float32) * _TWO_M24).to(dev)
    s = integer_arg(seed, "seed") & 0xFFFFFFFFFFFFFFFF
    o = integer_arg(offset, "offset") & 0xFFFFFFFFFFFFFFFF
    x0 = philox4x32_10((o & _MASK32, o >> 32, 0, 0), (s & _MASK32, s >> 32))[0]
    return (x0 >> 8) * _TWO_M24


# ---------------------------------------------------------------- gated sampling


@dataclass
class NegStepOutput:
    token: torch.Tensor  # [N] int64
    entropy: torch.Tensor  # [N] fp32 (nats)
    fired: torch.Tensor  # [N] bool
    status: torch.Tensor  # [N] int32, OR of NegStatus bits
    guided_logits: torch.Tensor  # [N, V] fp32

    @property
    def fire_rate(self) -> float:
        n = self.fired.numel()
        return float(self.fired.sum()) / n if n else 0.0


def integer_arg(value, name: str) -> int:
    """An integer argument as a Python int: ints and integer scalars of numpy or torch (their
    ``__index__``); bools, floats and strings are refused, not truncated or parsed."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name}: expected an integer, got {value!r}") from None


def check_sampling_args(top_k, temperature) -> int:
    """The op's own checks of ``top_k`` and ``temperature`` (shared by the host and CUDA
    wrappers); returns ``top_k`` as a Python int."""
    try:
        k = integer_arg(top_k, "top_k")  # refuses strings too: they have no __index__
    except ValueError:
        k = None
    if k is None or k < 1:
        raise ValueError(f"top_k: expected an integer >= 1, got {top_k!r}")
    if isinstance(temperature, (str, bytes, bool, np.bool_)) or (
            isinstance(temperature, torch.Tensor) and temperature.dtype == torch.bool):
        raise ValueError(f"temperature: expected a number, got {temperature!r}")
    # The softmax divides by T in fp32: a T that rounds to 0 or inf there would make every
    # positive logit +inf (or every logit 0) and the draw uniform over the candidates.
    t = to_float32(float(temperature))
    if not (t > 0.0) or math.isinf(t):
        raise ValueError(f"temperature: expected a finite value > 0 in float32, got {temperature!r}")
    return k


def as_int64(value: int) -> int:
    """A 64-bit seed or offset (any Python int, taken modulo 2^64) as the int64 with the same bits."""
    value = int(value) & 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value >= (1 << 63) else value


def int64_tensor(x, name: str) -> torch.Tensor:
    """Integers as an int64 tensor of their shape (decision 14): Python/numpy/torch integers, their
    arrays and tensors, lists, tuples and ranges; Python ints modulo 2^64, uint64 keeping its bits.
    A float, bool or string (alone or inside) raises ``ValueError`` naming ``name``, never truncated."""
    if isinstance(x, torch.Tensor):  # integer dtypes only
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise ValueError(f"{name}: expected integers, got dtype {x.dtype}")
        t = (x.view(torch.int64) if x.dtype == getattr(torch, "uint64", None) else x).to(torch.int64)
    elif hasattr(x, "dtype") and hasattr(x, "shape"):  # a numpy array or scalar
        if getattr(x.dtype, "kind", "") not in ("i", "u"):
            raise ValueError(f"{name}: expected integers, got dtype {x.dtype}")
        arr = np.asarray(x)
        arr = arr.astype(arr.dtype.newbyteorder("="))  # native byte order, for torch
        # uint64 keeps its 64 bits as int64; every other integer type converts by value
        t = torch.from_numpy(arr.view(np.int64) if arr.dtype == np.uint64 else arr.astype(np.int64))
    elif isinstance(x, (list, tuple, range)):
        t = torch.tensor([as_int64(integer_arg(v, name)) for v in x], dtype=torch.int64)
    else:
        t = torch.tensor(as_int64(integer_arg(x, name)), dtype=torch.int64)
    return t


def per_row_int64(x, n: int, name: str) -> torch.Tensor:
    """Per-row seeds/offsets as an int64 tensor [n] (:func:`int64_tensor`): a scalar is broadcast.

    Raises ``ValueError`` naming ``name`` unless ``x`` is a scalar or has exactly ``n`` entries.
    """
    t = int64_tensor(x, name)
    if t.dim() == 0:
        t = t.expand(n)
    if tuple(t.shape) != (n,):
        raise ValueError(f"{name}: expected a scalar or shape ({n},), got {tuple(t.shape)}")
    return t


def kernel_rows_int64(x, n: int, name: str) -> torch.Tensor:
    """Seeds/offsets for the host and CUDA builds: :func:`per_row_int64`, and one value (a
    scalar, a one-element tensor or a one-entry list) broadcast to every row, since those
    builds read exactly n values whatever they are given."""
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        x = x.reshape(())
    elif isinstance(x, (list, tuple)) and len(x) == 1:
        x = x[0]
    return per_row_int64(x, n, name)


def _per_row(x, n: int, name: str, device) -> torch.Tensor:
    return per_row_int64(x, n, name).to(device)


def _topk_candidates(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row of z (no NaN) in the order (value desc, id asc).

    torch.topk does not specify tie order, so ties at the k-th value are resolved
    explicitly: everything above the k-th value, plus the lowest ids equal to it.
    """
    rows, v = z.shape
    kth = torch.topk(z, k, dim=1, largest=True, sorted=True).values[:, -1:]
    gt = z > kth
    eq = z == kth
    need = k - gt.sum(dim=1, keepdim=True)
    take = gt | (eq & (torch.cumsum(eq.to(torch.int32), dim=1) <= need))
    ids = take.nonzero()[:, 1].reshape(rows, k)  # ascending ids within each row
    vals = torch.gather(z, 1, ids)
    # Stable sort on value desc keeps ids ascending among equal values.
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return torch.gather(vals, 1, order), torch.gather(ids, 1, order)


def gated_topk_sample(
    logits: torch.Tensor,
    entropy: torch.Tensor,
    threshold,
    top_k: int,
    temperature: float,
    seeds,
    offsets,
) -> NegStepOutput:
    """Gate + gated top-k sampling + guided logits for N rows of logits [N, V]."""
    top_k = check_sampling_args(top_k, temperature)
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 2:
        raise ValueError(f"logits: expected a floating-point tensor [N, V], got {getattr(logits, 'shape', type(logits))}")
    n, v = logits.shape
    if v < 1:
        raise ValueError("logits: vocabulary dimension must be >= 1")
    dev = logits.device
    entropy = torch.as_tensor(entropy).to(dev, torch.float32).reshape(-1)
    if entropy.numel() != n:
        raise ValueError(f"entropy: expected shape ({n},), got {tuple(entropy.shape)}")
    seeds = _per_row(seeds, n, "seeds", dev)
    offsets = _per_row(offsets, n, "offsets", dev)
    T = float(temperature)

    z = logits.float()
    z = torch.where(torch.isnan(z), torch.full_like(z, -math.inf), z)  # NaN counts as -inf
    fired = gate(entropy, threshold)
    status = torch.zeros(n, dtype=torch.int32, device=dev)
    any_finite = torch.isfinite(z).any(dim=1)
    any_posinf = (z == math.inf).any(dim=1)
    status |= torch.where(any_finite, 0, int(NegStatus.NO_FINITE_LOGIT)).to(torch.int32)
    status |= torch.where(any_posinf, int(NegStatus.POS_INF_LOGIT), 0).to(torch.int32)
    status |= torch.where(torch.isnan(entropy), int(NegStatus.NAN_ENTROPY), 0).to(torch.int32)

    token = torch.argmax(z, dim=1)  # first maximum = lowest id; NaN already -inf

    fired_idx = fired.nonzero().reshape(-1)
    if fired_idx.numel():
        k = min(top_k, v)
        vals, ids = _topk_candidates(z[fired_idx], k)
        # Divided by a tensor on the logits' device: CUDA divides by a Python float (a CPU
        # scalar) as a multiply by its fp32 reciprocal, which is inf below T = 2.9e-39.
        x = vals / torch.tensor(T, dtype=torch.float32, device=dev)
        m = x[:, :1]
        posinf = m == math.inf
        # Softmax in fp32; +inf candidates share the mass equally (limit of softmax).
        e = torch.where(posinf, (x == math.inf).float(), torch.exp(x - torch.where(posinf, 0.0, m)))
        e = torch.where(m == -math.inf, torch.zeros_like(e), e)  # no finite candidate
        s = e.sum(dim=1, keepdim=True)
        p = torch.where(s > 0, e / torch.where(s > 0, s, 1.0), torch.zeros_like(e))
        c = torch.cumsum(p, dim=1)
        u = philox_uniform(seeds[fired_idx], offsets[fired_idx]).to(dev).reshape(-1, 1)
        target = u * c[:, -1:]  # fp32 product, as in the kernels
        hit = c > target
        first = torch.where(hit.any(dim=1), hit.to(torch.int8).argmax(dim=1), -1)
        # Fallback (rounding only): last candidate with p > 0, else the first candidate.
        pos = (p > 0).to(torch.int64) * torch.arange(1, k + 1, device=dev)
        last_pos = pos.max(dim=1).values - 1
        last_pos = torch.where(last_pos >= 0, last_pos, 0)
        choice = torch.where(first >= 0, first, last_pos)
        token[fired_idx] = torch.gather(ids, 1, choice.reshape(-1, 1)).reshape(-1)

    one_hot_rows = fired | ~any_finite | any_posinf
    guided = torch.where(one_hot_rows.reshape(-1, 1), torch.full_like(z, -math.inf), z)
    if one_hot_rows.any():
        r = one_hot_rows.nonzero().reshape(-1)
        guided[r, token[r]] = 0.0
    return NegStepOutput(token=token.to(torch.int64), entropy=entropy, fired=fired, status=status, guided_logits=guided)


def neg_step(
    hidden: torch.Tensor,
    logits: torch.Tensor,
    weights: NegWeights,
    *,
    activation: str = "silu",
    top_k: int = 8,
    temperature: float = 1.0,
    seeds=0,
    offsets=0,
    threshold=None,
) -> NegStepOutput:
    """NEG-Head + gate + gated top-k sampling for one decoding step of N rows.

    ``seeds``/``offsets`` are per-row (or scalars): seed = NEG seed (or the request's),
    offset = absolute position of the token being generated.  ``threshold`` overrides
    ``weights.threshold`` when given.
    """
    if not isinstance(hidden, torch.Tensor) or not isinstance(logits, torch.Tensor):
        raise TypeError(f"hidden/logits: expected torch tensors, got {type(hidden).__name__} and "
                        f"{type(logits).__name__}")
    if hidden.dim() != 2 or logits.dim() != 2 or hidden.shape[0] != logits.shape[0]:
        raise ValueError(
            f"hidden/logits: expected [N, H] and [N, V] with the same N, got {tuple(hidden.shape)} and {tuple(logits.shape)}"
        )
    entropy = neg_head(hidden, weights, activation)
    tau = weights.threshold if threshold is None else threshold
    return gated_topk_sample(logits, entropy.to(logits.device), tau, top_k, temperature, seeds, offsets)


def neg_step_fast(hidden, logits, weights, **kwargs) -> NegStepOutput:
    """:func:`neg_step`, on CUDA tensors through the fused CUDA kernel (built on first use; a
    failed build raises -- set ``TRT_NEG_CUDA_EXT=0`` to use the torch reference).

    Used by the reference backend on GPUs.  The torch reference runs instead on CPU, when
    ``TRT_NEG_CUDA_EXT=0``, or when min(top_k, V) > 1024 (the kernel's limit).  The
    extension module is imported lazily so importing this module stays torch-only.
    """
    import os

    top_k = kwargs.get("top_k", 8)
    if logits.is_cuda and os.environ.get("TRT_NEG_CUDA_EXT", "1") != "0" and min(int(top_k), logits.shape[1]) <= 1024:
        from .kernels import cuda_ext

        return cuda_ext.neg_step(hidden, logits, weights, **kwargs)
    return neg_step(hidden, logits, weights, **kwargs)
