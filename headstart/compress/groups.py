"""Which layer group each node of an exported graph belongs to, so quantization can keep whole groups in float.

The exporter records each node's module path (`pkg.torch.onnx.name_scopes`); a path under the backbone is matched
against the backbone's layer-group prefixes, a path under the head is the group `head`.
"""

from __future__ import annotations

import ast

from headstart.backbones.base import within
from headstart.model.classifier import Classifier

WRAPPER = "model."  # the attribute under which headstart.compress.export wraps the classifier
SCOPES = "pkg.torch.onnx.name_scopes"


def _module_path(node) -> str | None:
    for prop in node.metadata_props:
        if prop.key == SCOPES:
            scopes = [s for s in ast.literal_eval(prop.value) if s.startswith(WRAPPER)]
            return scopes[-1][len(WRAPPER):] if scopes else None
    return None


def node_groups(proto, model: Classifier) -> dict[str, str]:
    """{node name: layer group name} for the nodes of `proto` that lie inside one layer group."""
    prefixes = model.backbone.group_prefixes()
    out = {}
    for node in proto.graph.node:
        path = _module_path(node)
        if path is None:
            continue
        if within(path, "head"):
            out[node.name] = "head"
            continue
        if not path.startswith("backbone."):
            continue
        inner = path[len("backbone."):]
        # the group one of whose prefixes holds the module; else the one group whose prefixes all lie inside it
        # (embedding groups are named by parameter, e.g. model.embeddings.word_embeddings.weight)
        holding = [name for name, pres in prefixes if any(within(inner, p) for p in pres)]
        inside = [name for name, pres in prefixes if any(within(p, inner) for p in pres)]
        if len(holding) == 1:
            out[node.name] = holding[0]
        elif not holding and len(inside) == 1:
            out[node.name] = inside[0]
    return out


def int8_groups(fp32_proto, int8_proto, groups: dict[str, str]) -> set[str]:
    """The layer groups whose weights quantization turned into integers: those with a node reading a float weight
    (an initializer of 2 or more dimensions) of the float graph that the quantized graph no longer holds as float.
    Dynamic int8 rewrites MatMuls and embedding tables only, so a CNN's convolutions stay float under it."""
    from onnx import TensorProto

    def float_weights(proto) -> set[str]:
        return {i.name for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) >= 2}

    replaced = float_weights(fp32_proto) - float_weights(int8_proto)
    return {groups[node.name] for node in fp32_proto.graph.node
            if node.name in groups and replaced.intersection(node.input)}


def nodes_of(groups: dict[str, str], names) -> list[str]:
    """The nodes of the named layer groups."""
    wanted = set(names)
    return sorted(node for node, group in groups.items() if group in wanted)


def group_order(model: Classifier) -> list[str]:
    return [group.name for group in model.groups]
