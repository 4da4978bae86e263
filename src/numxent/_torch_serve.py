"""What the PyTorch bridge can serve: the tensor test shared by every entry."""

from __future__ import annotations

import torch

_BASE_TORCH_FUNCTION = torch.Tensor.__torch_function__.__func__  # type: ignore[attr-defined]
# nn.Parameter's override only switches the subclass off in results
_PLAIN_TORCH_FUNCTIONS = (_BASE_TORCH_FUNCTION, torch._C._disabled_torch_function_impl)


def plain_tensor(t) -> bool:
    """True for a tensor numxent may read as plain memory.

    ``torch.Tensor`` itself, ``nn.Parameter`` and any other subclass that
    adds no ``__torch_function__`` of its own (a subclass that does, such as
    a tensor wrapper that logs or redirects operations, must see PyTorch's
    operations and is handed to PyTorch). While compiling (``torch.compile``,
    ``torch.export``) tensors are fake or functional: their type says
    nothing, and the registered ops take them. Only strided CPU tensors
    qualify.
    """
    if not isinstance(t, torch.Tensor):
        return False
    tf = type(t).__torch_function__
    plain = getattr(tf, "__func__", tf) in _PLAIN_TORCH_FUNCTIONS
    if not plain and not (
        torch.compiler.is_compiling() and isinstance(t, torch.Tensor)
    ):
        return False
    return t.is_cpu and t.layout is torch.strided
