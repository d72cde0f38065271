"""Which layer group each node of an exported graph belongs to, so quantization can keep whole groups in float.

The exporter records each node's module path (`pkg.torch.onnx.name_scopes`); a path under the backbone is matched
against the backbone's layer-group prefixes, a path under the head is the group `head`.
"""

from __future__ import annotations

import ast

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
        if path == "head" or path.startswith("head."):
            out[node.name] = "head"
            continue
        if not path.startswith("backbone."):
            continue
        inner = path[len("backbone."):]
        # the group one of whose prefixes holds the module; else the one group whose prefixes all lie inside it
        # (embedding groups are named by parameter, e.g. model.embeddings.word_embeddings.weight)
        holding = [name for name, pres in prefixes if any(inner == p or inner.startswith(p + ".") for p in pres)]
        inside = [name for name, pres in prefixes if any(p.startswith(inner + ".") for p in pres)]
        if len(holding) == 1:
            out[node.name] = holding[0]
        elif not holding and len(inside) == 1:
            out[node.name] = inside[0]
    return out


def nodes_of(groups: dict[str, str], names) -> list[str]:
    """The nodes of the named layer groups."""
    wanted = set(names)
    return sorted(node for node, group in groups.items() if group in wanted)


def group_order(model: Classifier) -> list[str]:
    return [group.name for group in model.groups]
