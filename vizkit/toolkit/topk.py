"""A running top-k per feature map over a stream of images, in O(maps x k) memory.

Each image contributes at most one candidate per map (its strongest location). Ties are broken
by the smaller image index, so the result does not depend on batch order or on how a dataset is
sharded across processes: merging per-shard states gives the single-process answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NO_IMAGE = torch.iinfo(torch.int64).max  # index of an empty slot: loses every tie


@dataclass
class RunningTopK:
    """The ``k`` strongest (value, image, position) per map seen so far."""

    values: Tensor  # [C, k] float, -inf in empty slots
    images: Tensor  # [C, k] int64 image indices, NO_IMAGE in empty slots
    positions: Tensor  # [C, k] int64 flat position in the map (row * width + col)

    @classmethod
    def empty(cls, maps: int, k: int, device: torch.device | str = "cpu") -> RunningTopK:
        """A state that has seen no image: ``maps`` maps of ``k`` empty slots on ``device``."""
        return cls(
            torch.full((maps, k), float("-inf"), device=device),
            torch.full((maps, k), NO_IMAGE, dtype=torch.long, device=device),
            torch.zeros((maps, k), dtype=torch.long, device=device),
        )

    @property
    def k(self) -> int:
        """Slots per map."""
        return self.values.shape[1]

    def update(self, activation: Tensor, image_indices: Tensor) -> None:
        """Fold in a batch: ``activation`` [B, C, h, w] (or [B, C]) of the images ``image_indices``."""
        flat = activation.detach().flatten(2) if activation.dim() > 2 else activation.detach()[:, :, None]
        flat = torch.nan_to_num(flat.float(), nan=float("-inf"))
        positions = flat.argmax(dim=2)  # first maximum of each map in each image
        values = flat.gather(2, positions[:, :, None])[:, :, 0]
        maps = values.shape[1]
        images = image_indices.to(self.images.device, torch.long)[:, None].expand(-1, maps)
        self.merge(values.t().to(self.values.device), images.t(), positions.t().to(self.positions.device))

    def merge(self, values: Tensor, images: Tensor, positions: Tensor) -> None:
        """Fold in candidates [C, n] (e.g. another shard's state)."""
        all_values = torch.cat([self.values, values.to(self.values.dtype)], dim=1)
        all_images = torch.cat([self.images, images], dim=1)
        all_positions = torch.cat([self.positions, positions], dim=1)
        # order by value (descending), ties by image index (ascending): two stable sorts
        by_image = all_images.argsort(dim=1, stable=True)
        by_value = all_values.gather(1, by_image).argsort(dim=1, descending=True, stable=True)
        order = by_image.gather(1, by_value)[:, : self.k]
        self.values = all_values.gather(1, order)
        self.images = all_images.gather(1, order)
        self.positions = all_positions.gather(1, order)

    def merge_state(self, other: RunningTopK) -> None:
        """Fold in ``other``'s candidates (e.g. another rank's state)."""
        self.merge(other.values, other.images, other.positions)

    def filled(self) -> int:
        """How many slots per map hold an image (k, unless fewer images were seen)."""
        return int((self.images[0] != NO_IMAGE).sum()) if self.images.numel() else 0

    def state_dict(self) -> dict[str, Tensor]:
        """The state as CPU tensors, to save or send (see :meth:`from_state_dict`)."""
        return {"values": self.values.cpu(), "images": self.images.cpu(), "positions": self.positions.cpu()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], device: torch.device | str = "cpu") -> RunningTopK:
        """A state from :meth:`state_dict`'s tensors ``state``, on ``device``."""
        return cls(state["values"].to(device), state["images"].to(device), state["positions"].to(device))
