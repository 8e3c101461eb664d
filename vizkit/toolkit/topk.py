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

    def update(self, activation: Tensor, image_indices: Tensor, maxima: Tensor | None = None) -> None:
        """Fold in a batch: ``activation`` [B, C, h, w] (or [B, C]) of the images ``image_indices``.

        ``maxima``: each map's maximum in each image, [B, C], when the caller has it already
        (``activation.flatten(2).float().amax(2)``). Values are ranked as ``torch.nan_to_num``
        with ``nan=-inf`` makes them: NaN as the most negative float, as is -inf, and +inf as the
        largest float."""
        flat = activation.detach().flatten(2) if activation.dim() > 2 else activation.detach()[:, :, None]
        flat = flat.float()
        values = flat.amax(dim=2) if maxima is None else maxima.detach().float()
        # a maximum that is NaN, infinite or the lowest float (which an -inf would tie with):
        # rank nan_to_num's values instead (rare, and it costs a copy of the activation)
        if not bool(((values > torch.finfo(torch.float32).min) & (values < float("inf"))).all()):
            flat = torch.nan_to_num(flat, nan=float("-inf"))
            values = flat.amax(dim=2)
        maps = values.shape[1]
        images = image_indices.to(self.images.device, torch.long)[:, None].expand(-1, maps)
        all_values = torch.cat([self.values, values.t().to(self.values.device, self.values.dtype)], dim=1)
        all_images = torch.cat([self.images, images.t()], dim=1)
        order = self._order(all_values, all_images)
        # the location (first maximum) only of the batch's candidates that made the top k, not
        # of every map of every image; its value bit for bit (amax may give 0.0 for a -0.0)
        where_map, where_slot = (order >= self.k).nonzero(as_tuple=True)
        column = order[where_map, where_slot]
        on = flat.device
        found_values, found = flat[(column - self.k).to(on), where_map.to(on)].max(dim=1)
        positions = torch.cat([self.positions, self.positions.new_zeros(maps, values.shape[0])], dim=1)
        positions[where_map, column] = found.to(positions.device)
        all_values[where_map, column] = found_values.to(all_values.device, all_values.dtype)
        self.values = all_values.gather(1, order)
        self.images = all_images.gather(1, order)
        self.positions = positions.gather(1, order)

    def merge(self, values: Tensor, images: Tensor, positions: Tensor) -> None:
        """Fold in candidates [C, n] (e.g. another shard's state)."""
        all_values = torch.cat([self.values, values.to(self.values.dtype)], dim=1)
        all_images = torch.cat([self.images, images], dim=1)
        all_positions = torch.cat([self.positions, positions], dim=1)
        order = self._order(all_values, all_images)
        self.values = all_values.gather(1, order)
        self.images = all_images.gather(1, order)
        self.positions = all_positions.gather(1, order)

    def _order(self, values: Tensor, images: Tensor) -> Tensor:
        """[C, k]: which of the candidates [C, n] are the k strongest of each map, strongest first."""
        # order by value (descending), ties by image index (ascending): two stable sorts
        by_image = images.argsort(dim=1, stable=True)
        by_value = values.gather(1, by_image).argsort(dim=1, descending=True, stable=True)
        return by_image.gather(1, by_value)[:, : self.k]

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
