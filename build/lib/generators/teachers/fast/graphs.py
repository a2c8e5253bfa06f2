"""CUDA-graph capture and replay of the engine's decode step, one graph per shape and sampling mode.

A decode step of a 135M-parameter model is ~600 small kernels; launched one by one from Python
they cost far more than they compute. Captured once per ``(batch bucket, kv_len bucket, mode)``
and replayed, the step is a single launch. All graphs share one memory pool: they are replayed
one at a time and write their results into the engine's persistent buffers, never into the pool.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class GraphCache:
    """Run ``engine.step(batch, kv_len)``, through a captured CUDA graph when enabled.

    Args:
        engine: The :class:`~generators.teachers.fast.engine.FastEngine` whose buffers the step reads and writes.
        enabled: Capture and replay; off runs the step eagerly (CPU, or debugging on CUDA).
    """

    def __init__(self, engine, enabled: bool):
        self.engine, self.enabled = engine, enabled
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.pool = None

    def __len__(self) -> int:
        return len(self.graphs)

    def clear(self) -> None:
        self.graphs.clear()
        self.pool = None

    def step(self, batch: int, kv_len: int) -> None:
        if not self.enabled:
            self.engine.step(batch, kv_len)
            return
        key = (batch, kv_len, self.engine.mode)
        graph = self.graphs.get(key)
        if graph is None:
            try:
                graph = self._capture(key)
            except RuntimeError as exc:  # a kernel that cannot be captured: decode eagerly, slower
                log.warning("CUDA graph capture failed (%s); decoding without graphs", exc)
                self.enabled = False
                self.engine.step(batch, kv_len)
                return
        graph.replay()

    def _capture(self, key: tuple) -> torch.cuda.CUDAGraph:
        batch, kv_len, _ = key
        e = self.engine
        # The warm-up step really runs (lazy kernel and cuBLAS setup must not happen during capture);
        # put back the row state it advanced. The KV entries it wrote are the ones the replay writes.
        state = e.state.per_row()
        saved = [t.clone() for t in state]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            e.step(batch, kv_len)
        torch.cuda.current_stream().wait_stream(side)
        for t, s in zip(state, saved, strict=True):
            t.copy_(s)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            e.step(batch, kv_len)
        self.graphs[key] = graph
        log.debug("captured decode graph batch=%d kv_len=%d mode=%s", *key)
        return graph
