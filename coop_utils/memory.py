"""What a training step holds in memory for its backward: the bytes autograd saves.

Activation memory dominates a training step of a deep network, and it is what the order of
forwards and backwards decides: a step that back-propagates each pass as soon as it is
computed holds one pass's graph at a time, a step with one backward holds all of them.
:class:`SavedActivations` counts the tensors autograd saves for backward while they are alive
(``torch.autograd.graph.saved_tensors_hooks``), so that the peak can be compared on the CPU at
a small batch and scaled to a GPU's batch (saved activations grow linearly with the batch).
"""

from __future__ import annotations

import torch
from torch import Tensor


class _Saved:
    """A saved tensor, counted while autograd holds it."""

    __slots__ = ("key", "meter", "tensor")

    def __init__(self, meter: SavedActivations, tensor: Tensor, key: int) -> None:
        self.meter, self.tensor, self.key = meter, tensor, key

    def __del__(self) -> None:
        self.meter._release(self.key)


class SavedActivations:
    """Live and peak bytes of the tensors autograd saves for backward within a ``with`` block.

    Each storage counts once however many operations save it, from the first save until the
    last is released (by a backward, or when the graph is dropped). Parameters (leaves that
    require a gradient) are not counted: they are held whatever the step does.

        with SavedActivations() as saved:
            system.backward_step(images, labels, randomness)
        saved.peak  # bytes
    """

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._holders: dict[int, list[int]] = {}  # storage -> [saves alive, bytes]
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: Tensor) -> object:
        if tensor.is_leaf and tensor.requires_grad:
            return tensor
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        holder = self._holders.setdefault(key, [0, storage.nbytes()])
        if holder[0] == 0:
            self.live += holder[1]
            self.peak = max(self.peak, self.live)
        holder[0] += 1
        return _Saved(self, tensor, key)

    @staticmethod
    def _unpack(packed: object) -> Tensor:
        return packed.tensor if isinstance(packed, _Saved) else packed

    def _release(self, key: int) -> None:
        holder = self._holders[key]
        holder[0] -= 1
        if holder[0] == 0:
            self.live -= holder[1]
            del self._holders[key]

    def __enter__(self) -> SavedActivations:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._hooks.__exit__(*exc_info)
