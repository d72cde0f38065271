"""Weight-only int8 for embedding tables: one scale per row (per token), dequantized right after the lookup.

ONNX Runtime's own Gather quantization uses one scale for the whole table; with a 30k-token vocabulary a few
outlier rows then set the step for all of them. Per row, each token keeps its own range. The table is what makes
a small transformer large (MiniLM: 45 of its 87 MB), so this is where the size goes.
"""

from __future__ import annotations

import numpy as np

MIN_ELEMENTS = 16384  # smaller tables (token types, a few positions) are not worth the extra nodes


def _row_quantize(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: (int8 table, float32 scales of shape (rows, 1))."""
    scale = np.abs(table).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.rint(table / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def quantize_embeddings(proto, exclude: set[str] = frozenset()) -> list[str]:
    """Rewrite, in place, each Gather from a large float 2-D initializer (not among `exclude` node names) as
    Gather(int8 table) -> Cast -> Mul(Gather(row scales)). Returns the rewritten node names."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    rewritten, new_nodes = [], []
    for node in graph.node:
        init = initializers.get(node.input[0]) if node.op_type == "Gather" and node.input else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if (node.name in exclude or init is None or init.data_type != TensorProto.FLOAT or len(init.dims) != 2
                or axis != 0 or int(np.prod(init.dims)) < MIN_ELEMENTS or users[init.name] != 1):
            new_nodes.append(node)
            continue
        values, scales = _row_quantize(numpy_helper.to_array(init))
        table, scale_name = f"{init.name}_int8", f"{init.name}_row_scale"
        graph.initializer.remove(init)
        graph.initializer.extend([numpy_helper.from_array(values, table), numpy_helper.from_array(scales, scale_name)])
        ids, out, base = node.input[1], node.output[0], node.name
        new_nodes += [
            helper.make_node("Gather", [table, ids], [f"{out}_int8"], name=f"{base}_int8", axis=0),
            helper.make_node("Cast", [f"{out}_int8"], [f"{out}_cast"], name=f"{base}_cast", to=TensorProto.FLOAT),
            helper.make_node("Gather", [scale_name, ids], [f"{out}_scale"], name=f"{base}_scale", axis=0),
            helper.make_node("Mul", [f"{out}_cast", f"{out}_scale"], [out], name=f"{base}_dequantize"),
        ]
        rewritten.append(node.name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return rewritten
