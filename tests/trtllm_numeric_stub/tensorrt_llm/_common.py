"""default_net() / default_trtnet(): an eager "network" (plugin layers run when added), the
pointer registry standing in for device/host addresses of state pools, and the tensor-parallel
"world" the collectives (``functional.allreduce`` / ``allgather``) of several ranks meet in.

The network and its slot are shared with the recording stub (tests/trtllm_stub_shared/_common.py);
the executing plugin layers, this module's network instance and the pointer registry (fresh per
test module: the module is re-imported after each purge) are this stub's.

Tensor parallelism (:class:`TensorParallelWorld`): the tp ranks of one engine each run their own
network (one per rank, as TensorRT-LLM builds one engine per rank) in lockstep, one thread per
rank. ``default_net()`` is per thread (each rank's forward writes its own network's outputs and
plugin layers), and a collective is a rendezvous of all ranks of its group: each rank posts its
tensor, all wait on a barrier, each reads every rank's tensor (combined in rank order, so the
result is deterministic and bitwise the same on every rank, whatever the thread timing), and a
second barrier keeps a slot from being overwritten before every rank has read it. Ranks must
issue the same collectives in the same order (checked: kind, group and shape of each call);
an exception on one rank breaks the barriers so the others fail instead of hanging.
"""

from __future__ import annotations

import threading

import torch

from trtllm_stub_shared._common import DefaultNetwork, Network


class _Layer:
    def __init__(self, plugin, outputs):
        self.plugin, self.outputs = plugin, list(outputs)

    def get_output(self, i):
        return self.outputs[i]


class _TrtNetwork:
    def __init__(self):
        self.plugin_layers = []

    def add_plugin_v3(self, inputs, shape_inputs, plugin):
        assert list(shape_inputs) == []
        layer = _Layer(plugin, plugin.execute(list(inputs)))
        self.plugin_layers.append(layer)
        return layer


_MODEL_DTYPE = "float32"


def set_model_dtype(dtype: str) -> None:
    """The model dtype the next networks are built for: build.make_build_config sets
    ``gpt_attention_plugin`` / ``mamba_conv1d_plugin`` to ``"auto"``, which TensorRT-LLM's
    PluginConfig resolves to ``dtype`` (the checkpoint's)."""
    global _MODEL_DTYPE
    _MODEL_DTYPE = dtype


def _new_network():
    # The flags build.make_build_config sets for Darwin-NEG (in-flight batching); "auto" plugins = model dtype.
    return Network(_TrtNetwork(), dtype=_MODEL_DTYPE, gpt_attention_plugin=_MODEL_DTYPE,
                   mamba_conv1d_plugin=_MODEL_DTYPE, multiple_profiles=False, lora_plugin=None)


class _PerThreadNetwork(DefaultNetwork):
    """The shared default-network slot, one per thread (a tp rank runs in its own thread)."""

    def __init__(self, make):
        self._local = threading.local()
        super().__init__(make)

    @property
    def _net(self):
        if not hasattr(self._local, "net"):
            self._local.net = self._make()
        return self._local.net

    @_net.setter
    def _net(self, net):
        self._local.net = net


_DEFAULT = _PerThreadNetwork(_new_network)
default_net, default_trtnet, reset = _DEFAULT.default_net, _DEFAULT.default_trtnet, _DEFAULT.reset


# --- "pointers" -------------------------------------------------------------------------
_POINTERS: dict[int, torch.Tensor] = {}


def register_pointer(tensor: torch.Tensor) -> int:
    """The address TensorRT-LLM's runtime would pass for ``tensor`` (a state pool)."""
    ptr = int(tensor.data_ptr())
    _POINTERS[ptr] = tensor
    return ptr


def resolve_pointer(ptr) -> torch.Tensor:
    value = int(torch.as_tensor(ptr).reshape(-1)[0])
    if value not in _POINTERS:
        raise KeyError(f"no buffer registered at address {value:#x}")
    return _POINTERS[value]


def register_object(obj) -> int:
    """A fake address for a Python object (the KV-cache pool)."""
    ptr = id(obj)
    _POINTERS[ptr] = obj
    return ptr


# --- tensor parallelism: ranks in lockstep, collectives as rendezvous ---------------------
_RANK = threading.local()  # .world, .rank of the calling thread (set by TensorParallelWorld.run)


class CollectiveMismatch(AssertionError):
    """The ranks did not issue the same collective (kind, group, shape) at the same point."""


class TensorParallelWorld:
    """``world_size`` ranks running one callable each, in lockstep threads; see the module docstring."""

    def __init__(self, world_size: int, timeout: float = 60.0):
        self.world_size, self.timeout = world_size, timeout
        self._barrier = threading.Barrier(world_size, timeout=timeout)
        self._slots: list = [None] * world_size
        self.calls: list[tuple] = []  # (kind, group, shape) of each collective, as rank 0 saw it

    def run(self, fns):
        """Run ``fns[r]()`` as rank r (one thread each); returns their results in rank order."""
        assert len(fns) == self.world_size
        results, errors = [None] * self.world_size, [None] * self.world_size

        def main(rank, fn):
            _RANK.world, _RANK.rank = self, rank
            try:
                results[rank] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
                errors[rank] = exc
                self._barrier.abort()  # the other ranks fail at their next collective instead of hanging
            finally:
                _RANK.world = _RANK.rank = None

        threads = [threading.Thread(target=main, args=(r, fn), name=f"tp-rank{r}") for r, fn in enumerate(fns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._barrier.reset()
        first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)),
                     next((e for e in errors if e is not None), None))
        if first is not None:
            raise first
        return results

    def exchange(self, kind: str, group, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank of ``group`` posts ``tensor``; returns the posted tensors in ``group`` order."""
        rank = _RANK.rank
        group = [int(g) for g in group]
        if sorted(group) != list(range(self.world_size)) or rank not in group:
            raise CollectiveMismatch(f"rank {rank}: collective over group {group}, world of {self.world_size}")
        key = (kind, tuple(group), tuple(tensor.shape), tensor.dtype)
        self._slots[rank] = (key, tensor)
        self._barrier.wait()
        posted = list(self._slots)
        self._barrier.wait()  # nobody posts the next collective before everyone has read this one
        keys = {p[0] for p in posted}
        if len(keys) != 1:
            raise CollectiveMismatch(f"ranks disagree on a collective: {[p[0] for p in posted]}")
        if rank == 0:
            self.calls.append(key[:3])
        return [posted[g][1] for g in group]


def current_tp_world() -> TensorParallelWorld:
    world = getattr(_RANK, "world", None)
    if world is None:
        raise RuntimeError("numeric stub: a tp collective outside TensorParallelWorld.run (tp_size > 1 needs "
                           "every rank's network running in lockstep)")
    return world
