"""Storage of per-example states: in memory up to a budget, then in a file on disk read back memory-mapped."""

from __future__ import annotations

from pathlib import Path

import torch

from headstart.backbones.base import State

ALIGN = 64  # bytes: every tensor in the spill file starts aligned, so it can be viewed as any dtype


def collate_states(items: list[State]) -> State:
    """Stack per-example states into a batch; tensors of different lengths (texts) are zero-padded at the end."""
    batch = {}
    for key in items[0]:
        tensors = [item[key] for item in items]
        longest = max(t.shape[0] for t in tensors) if tensors[0].dim() else 0
        if any(t.dim() and t.shape[0] != longest for t in tensors):
            padded = tensors[0].new_zeros((len(tensors), longest, *tensors[0].shape[1:]))
            for i, t in enumerate(tensors):
                padded[i, : t.shape[0]] = t
            batch[key] = padded
        else:
            batch[key] = torch.stack(tensors)
    return batch


class StateStore:
    """States keyed by (view, example). Kept in memory while they fit `budget_bytes`; beyond that, appended to a
    file in `spill_dir` and read back through a memory map."""

    def __init__(self, budget_bytes: int, spill_dir: Path, dtype: torch.dtype | None = None):
        self.budget = budget_bytes
        self.spill_path = Path(spill_dir) / "states.bin"
        self.spill_path.unlink(missing_ok=True)  # left by a run killed while it spilled: its states are not indexed
        self.dtype = dtype
        self.bytes = 0
        self._memory: dict[tuple[int, int], State] = {}
        self._disk: dict[tuple[int, int], dict[str, tuple[int, torch.Size, torch.dtype]]] = {}
        self._file = None
        self._mapped: torch.Tensor | None = None

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._memory or key in self._disk

    def put(self, key: tuple[int, int], state: State) -> None:
        if key in self:
            return
        # one copy, never a view of the batch: the trainable groups may change their input in place
        state = {k: v.detach().to("cpu", self.dtype if self.dtype and v.is_floating_point() else v.dtype, copy=True,
                                  memory_format=torch.contiguous_format) for k, v in state.items()}
        size = sum(v.numel() * v.element_size() for v in state.values())
        if self.bytes + size <= self.budget:
            self._memory[key] = state
            self.bytes += size
            return
        self._append(key, state)

    def _append(self, key, state: State) -> None:
        if self._file is None:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.spill_path.open("wb")
        record = {}
        for name, tensor in state.items():
            offset = self._file.tell()
            self._file.write(tensor.view(-1).view(torch.uint8).numpy().tobytes())
            self._file.write(b"\0" * (-self._file.tell() % ALIGN))
            record[name] = (offset, tensor.shape, tensor.dtype)
        self._disk[key] = record
        self._mapped = None

    def get(self, key: tuple[int, int]) -> State:
        if key in self._memory:
            return self._memory[key]
        if self._mapped is None:
            self._file.flush()
            size = self.spill_path.stat().st_size
            self._mapped = torch.from_file(str(self.spill_path), shared=False, size=size, dtype=torch.uint8)
        state = {}
        for name, (offset, shape, dtype) in self._disk[key].items():
            count = shape.numel() * torch.empty((), dtype=dtype).element_size()
            state[name] = self._mapped[offset: offset + count].view(dtype).view(shape)
        return state

    def close(self) -> None:
        """Free the memory and delete the spill file, with its folder once empty."""
        self._memory.clear()
        self._disk.clear()
        self._mapped = None
        if self._file is not None:
            self._file.close()
            self._file = None
            self.spill_path.unlink(missing_ok=True)
            if not any(self.spill_path.parent.iterdir()):
                self.spill_path.parent.rmdir()
        self.bytes = 0
