"""default_net() / default_trtnet(): an eager "network" (plugin layers run when added), the
pointer registry standing in for device/host addresses of state pools, and the tp x pp "world" the
collectives (``functional.allreduce`` / ``allgather``) and ``send`` / ``recv`` of several ranks meet in.

The network and its slot are shared with the recording stub (tests/trtllm_stub_shared/_common.py);
the executing plugin layers, this module's network instance and the pointer registry (fresh per
test module: the module is re-imported after each purge) are this stub's.

Tensor / pipeline parallelism (:class:`TensorParallelWorld`): the tp x pp ranks each run their own
network (one per rank, as TensorRT-LLM builds one engine per rank) in lockstep, one thread per
rank; pipeline stages hand the hidden state on with ``send`` / ``recv`` (mailboxes, see the
class). ``default_net()`` is per thread (each rank's forward writes its own network's outputs and
plugin layers), and a collective is a rendezvous of all ranks of its group (one barrier per
group): each rank posts its tensor, all wait on the barrier, each reads every rank's tensor
(combined in rank order, so the result is deterministic and bitwise the same on every rank,
whatever the thread timing), and a second barrier keeps a slot from being overwritten before every
rank has read it. Ranks must issue the same collectives in the same order (checked: kind, group
and shape of each call); an exception on one rank breaks the barriers and recvs so the others fail
instead of hanging.
"""

from __future__ import annotations

import queue
import threading
import time

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
    # nccl_plugin: 1.x PluginConfig default "auto" (make_build_config leaves it), i.e. the model dtype.
    return Network(_TrtNetwork(), dtype=_MODEL_DTYPE, gpt_attention_plugin=_MODEL_DTYPE,
                   mamba_conv1d_plugin=_MODEL_DTYPE, nccl_plugin=_MODEL_DTYPE, multiple_profiles=False,
                   lora_plugin=None)


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


# --- tp x pp ranks in lockstep: collectives as rendezvous, send / recv as mailboxes ----------
_RANK = threading.local()  # .world, .rank of the calling thread (set by TensorParallelWorld.run)


class CollectiveMismatch(AssertionError):
    """The ranks did not issue the same collective (kind, group, shape) at the same point, or a
    recv did not match its send (shape / dtype of the placeholder vs the sent tensor)."""


class _Group:
    def __init__(self, size: int, timeout: float):
        self.barrier = threading.Barrier(size, timeout=timeout)
        self.slots: dict[int, tuple] = {}


class TensorParallelWorld:
    """``world_size`` ranks (tp x pp, tp fastest as ``Mapping``) running one callable each, in
    lockstep threads; see the module docstring.

    Collectives rendezvous per group (a tp group: ``mapping.tp_group``, every rank of one pp stage).
    Point-to-point (TensorRT-LLM functional.py @0071496d ``send(tensor, tgt)`` / ``recv(tensor, src)``,
    the NCCL Send / Recv plugins): :meth:`send` posts a copy of the tensor in the (src, tgt) mailbox
    and returns (ncclSend: the transfer completes once the peer posts its recv; nothing here waits
    for it), :meth:`recv` waits for the (src, tgt) mailbox's next tensor, which must have the
    placeholder's shape and dtype (RecvPlugin: output dims = its input's, ncclRecv of that many
    elements of ``type_id``); messages of one (src, tgt) pair arrive in order. A run that ends
    with an unreceived message fails (a send without its recv)."""

    def __init__(self, world_size: int, timeout: float = 60.0):
        self.world_size, self.timeout = world_size, timeout
        self._lock = threading.Lock()
        self._aborted = threading.Event()
        self._groups: dict[tuple, _Group] = {}
        self._mail: dict[tuple[int, int], "queue.Queue"] = {}
        self.calls: list[tuple] = []  # (kind, group, shape) of each collective, as the group's first rank saw it
        self.p2p: list[tuple] = []  # ("send", src, tgt, shape) of each send, in the order posted

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
                self._abort()  # the other ranks fail at their next collective / recv instead of hanging
            finally:
                _RANK.world = _RANK.rank = None

        threads = [threading.Thread(target=main, args=(r, fn), name=f"rank{r}") for r, fn in enumerate(fns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        undelivered = {k: q.qsize() for k, q in self._mail.items() if q.qsize()}
        with self._lock:
            self._groups.clear()
            self._mail.clear()
            self._aborted.clear()
        first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)),
                     next((e for e in errors if e is not None), None))
        if first is not None:
            raise first
        if undelivered:
            raise CollectiveMismatch(f"sends never received, (src, tgt): count = {undelivered}")
        return results

    def _abort(self):
        with self._lock:
            self._aborted.set()
            for g in self._groups.values():
                g.barrier.abort()

    def _group(self, group: tuple) -> _Group:
        with self._lock:
            if group not in self._groups:
                self._groups[group] = _Group(len(group), self.timeout)
                if self._aborted.is_set():
                    self._groups[group].barrier.abort()
            return self._groups[group]

    def exchange(self, kind: str, group, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank of ``group`` posts ``tensor``; returns the posted tensors in ``group`` order."""
        rank = _RANK.rank
        group = tuple(int(g) for g in group)
        if (list(group) != sorted(set(group)) or not all(0 <= g < self.world_size for g in group)
                or rank not in group):
            raise CollectiveMismatch(f"rank {rank}: collective over group {list(group)}, world of {self.world_size}")
        key = (kind, group, tuple(tensor.shape), tensor.dtype)
        g = self._group(group)
        g.slots[rank] = (key, tensor)
        g.barrier.wait()
        posted = [g.slots[r] for r in group]
        g.barrier.wait()  # nobody posts the next collective before everyone has read this one
        keys = {p[0] for p in posted}
        if len(keys) != 1:
            raise CollectiveMismatch(f"ranks disagree on a collective: {[p[0] for p in posted]}")
        if rank == group[0]:
            with self._lock:
                self.calls.append(key[:3])
        return [p[1] for p in posted]

    def _mailbox(self, src: int, tgt: int):
        for r in (src, tgt):
            if not 0 <= r < self.world_size:
                raise CollectiveMismatch(f"point-to-point {src} -> {tgt}: rank {r} outside a world of "
                                         f"{self.world_size}")
        if src == tgt:
            raise CollectiveMismatch(f"rank {src} sends to itself")
        with self._lock:
            return self._mail.setdefault((src, tgt), queue.Queue())

    def send(self, tgt: int, tensor: torch.Tensor) -> None:
        rank = _RANK.rank
        box = self._mailbox(rank, int(tgt))
        with self._lock:
            self.p2p.append(("send", rank, int(tgt), tuple(tensor.shape)))
        box.put(tensor.detach().clone())

    def recv(self, src: int, placeholder: torch.Tensor) -> torch.Tensor:
        rank = _RANK.rank
        box = self._mailbox(int(src), rank)
        deadline = time.monotonic() + self.timeout
        while True:
            if self._aborted.is_set():
                raise threading.BrokenBarrierError(f"rank {rank}: recv from {src} aborted (another rank failed)")
            try:
                got = box.get(timeout=0.05)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rank {rank}: no send from rank {src} within {self.timeout} s") from None
        if got.shape != placeholder.shape or got.dtype != placeholder.dtype:
            raise CollectiveMismatch(f"rank {rank}: recv from {src} into a {tuple(placeholder.shape)} "
                                     f"{placeholder.dtype} placeholder, sent {tuple(got.shape)} {got.dtype}")
        return got


def current_tp_world() -> TensorParallelWorld:
    world = getattr(_RANK, "world", None)
    if world is None:
        raise RuntimeError("numeric stub: a collective / send / recv outside TensorParallelWorld.run "
                           "(tp_size or pp_size > 1 needs every rank's network running in lockstep)")
    return world
