"""Recording stub of ``tensorrt_llm.bindings`` (only ``executor``); see executor.py."""
