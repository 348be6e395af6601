"""A net's architecture as tensor shapes: saved in checkpoints, rebuilt before weights load.

`restore_structure` is what the prune method calls right after Lightning reads a checkpoint (any
LightningModule: `ckpt_path=...`, `resume=`, `trainer.test(ckpt_path="best")`), and what
`ClassifierModule.on_load_checkpoint` calls (`load_from_checkpoint`, outside a Trainer), so a
pruned net's widths are rebuilt before its weights load.
`sync_attributes` makes a resized layer's size attributes (`out_features`, `embed_dim`, ...)
agree with its tensors, after a prune as after a restore.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

STRUCTURE_KEY = "wattwise_structure"


def tensor_shapes(module: nn.Module) -> dict[str, list[int]]:
    """Shape of every parameter and buffer, by its state-dict name."""
    out = {n: list(p.shape) for n, p in module.named_parameters()}
    out.update({n: list(b.shape) for n, b in module.named_buffers()})
    return out


def _sync_attention(mod: nn.MultiheadAttention) -> None:
    if mod.in_proj_weight is not None:  # q, k and v share one (3E, E) weight
        mod.embed_dim = mod.in_proj_weight.shape[1]
        mod.kdim = mod.vdim = mod.embed_dim
    elif mod.q_proj_weight is not None:
        mod.embed_dim = mod.q_proj_weight.shape[0]
        mod.kdim = mod.k_proj_weight.shape[1]
        mod.vdim = mod.v_proj_weight.shape[1]
    mod.head_dim = mod.embed_dim // mod.num_heads


def sync_attributes(mod: nn.Module) -> None:
    """Make a resized layer's size attributes agree with its tensors."""
    w = getattr(mod, "weight", None)
    if isinstance(mod, nn.MultiheadAttention):
        _sync_attention(mod)
    elif isinstance(mod, nn.modules.conv._ConvNd) and w is not None:
        if mod.transposed:
            mod.in_channels, mod.out_channels = w.shape[0], w.shape[1] * mod.groups
        else:
            mod.out_channels, mod.in_channels = w.shape[0], w.shape[1] * mod.groups
    elif isinstance(mod, nn.Linear) and w is not None:
        mod.out_features, mod.in_features = w.shape[0], w.shape[1]
    elif isinstance(mod, nn.Embedding) and w is not None:
        mod.num_embeddings, mod.embedding_dim = w.shape[0], w.shape[1]
    elif isinstance(mod, nn.modules.batchnorm._NormBase):
        ref = w if w is not None else mod.running_mean
        if ref is not None:
            mod.num_features = ref.shape[0]
    elif isinstance(mod, nn.GroupNorm) and w is not None:
        mod.num_channels = w.shape[0]
    elif isinstance(mod, nn.LayerNorm) and w is not None:
        mod.normalized_shape = tuple(w.shape)


def restore_structure(module: nn.Module, checkpoint: dict[str, Any]) -> bool:
    """Resize `module`'s tensors to the shapes saved in `checkpoint` (before its weights load).

    Works in both directions (a pruned net loading a wider checkpoint, a fresh net loading a
    pruned one). The values are left uninitialised: the state dict that follows fills them.
    Returns True when something was resized.
    """
    shapes: dict[str, list[int]] | None = checkpoint.get(STRUCTURE_KEY)
    if not shapes:
        return False
    changed_any = False
    for mod_name, mod in module.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        changed = False
        for table, make in ((mod._parameters, "param"), (mod._buffers, "buffer")):
            for name, t in list(table.items()):
                shape = shapes.get(prefix + name)
                if t is None or shape is None or list(t.shape) == list(shape):
                    continue
                new = torch.empty(shape, dtype=t.dtype, device=t.device)
                table[name] = nn.Parameter(new, requires_grad=t.requires_grad) if make == "param" else new
                changed = True
        if changed:
            sync_attributes(mod)
            changed_any = True
    return changed_any


def modes(net: nn.Module) -> dict[nn.Module, bool]:
    """Every submodule's train/eval flag (building a pruner or a prune leaves the net in eval mode)."""
    return {m: m.training for m in net.modules()}


def restore_modes(saved: dict[nn.Module, bool]) -> None:
    for m, training in saved.items():
        m.training = training
