"""Pure-Python pieces both stand-ins of tensorrt / tensorrt_llm 1.2.x share.

``tests/trtllm_stub/`` (recording: symbolic tensors) and ``tests/trtllm_numeric_stub/``
(numeric: torch tensors) import these modules and re-export them under the real module names
(``tensorrt.DataType``, ``tensorrt_llm.mapping.Mapping``, ...), so each fact about the real API
(enum codes, constructor signatures, parameter names and shapes) is written once, here. What the
two stubs do differently (a ``functional.Tensor`` that records vs one that computes, layer
``forward``s, plugin registries, the default network's plugin layers) stays in each stub.

Module identity: the stubs are put on ``sys.path`` per test and ``tests/conftest.py::purge_trtllm``
drops every ``tensorrt*`` / ``tensorrt_llm*`` module between tests; this package is named
neither, so it is imported once per session and survives the purge. It must therefore hold
NO per-test state: only classes, functions and constants. Mutable state (the plugin registry,
``default_net()``, ``models.MODEL_MAP``, the numeric pointer table) lives in the stubs' own
modules, which the purge re-creates. A class here that needs a stub's class (its ``Parameter``,
``ColumnLinear``, ``Attention``) gets it from a stub subclass's class attribute or an argument,
never by importing ``tensorrt_llm``.

Importable because pytest puts ``tests/`` on ``sys.path`` (rootdir conftest, no package; see
``tests/_build.py``).
"""
