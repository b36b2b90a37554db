"""ROAD's linear imputation, solved for many masks of one image at once.

ROAD (Rong et al., 2022, https://arxiv.org/abs/2202.00449) replaces each removed
pixel by the weighted mean of its 8 neighbours: weight 1/6 for the 4 edge
neighbours, 1/12 for the 4 diagonal ones. Neighbours outside the image are
dropped and the remaining weights renormalised, exactly as
``pytorch_grad_cam.metrics.road.NoisyLinearImputer`` does. Removed neighbours
are unknowns too, so every mask gives a sparse linear system

    d_i x_i - sum_{j removed} w_ij x_j = sum_{j kept} w_ij v_j     (i removed)

with ``d_i`` the summed weight of ``i``'s in-image neighbours and ``v`` the
image. The matrix is symmetric positive definite (an irreducibly diagonally
dominant M-matrix) whenever at least one pixel is kept, so it is factorised
once per mask without pivoting and shared by all channels.

Speed comes from three places: the systems of a group of masks are built
together with vectorised index arithmetic on a padded pixel grid (one gather
per neighbour offset, none over pixels or masks) into one block-diagonal
matrix; unknowns are numbered in a nested-dissection order of the pixel grid,
which SuperLU keeps as given and which gives it less fill than its own
orderings on these grid graphs; and the groups are independent, so callers may
solve them on several threads (SuperLU releases the GIL).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import scipy.sparse
import torch
from scipy.sparse.linalg import splu

# (row offset, column offset, weight) of the 8 neighbours, ROAD's weighting.
NEIGHBOUR_WEIGHTS: tuple[tuple[int, int, float], ...] = (
    (1, 1, 1 / 12),
    (0, 1, 1 / 6),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (0, -1, 1 / 6),
    (-1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (-1, 0, 1 / 6),
)

# Boxes at most this large are not split further by the nested dissection.
_LEAF_AREA = 16

# The most bytes of per-mask planes one building of a group's systems holds.
_BUILD_BYTES = 32 * 2**20


@functools.lru_cache(maxsize=16)
def nested_dissection_rank(height: int, width: int) -> np.ndarray:
    """Elimination rank of every pixel under a geometric nested dissection.

    The grid is split recursively by a middle row or column (one pixel wide is
    enough: the 8-neighbourhood does not reach across it); both halves come
    before their separator. Restricted to any subset of pixels this is still a
    good fill-reducing order, so one rank table per image size serves every mask.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        ``int64`` array of length ``height * width``: the rank of each flat pixel.
        Read-only, as it is cached.
    """
    pieces: list[np.ndarray] = []
    # Explicit stack of (y0, y1, x0, x1, is_separator); popping in LIFO order
    # with the separator pushed first emits first half, second half, separator.
    stack: list[tuple[int, int, int, int, bool]] = [(0, height, 0, width, False)]
    while stack:
        y0, y1, x0, x1, emit = stack.pop()
        h, w = y1 - y0, x1 - x0
        if h <= 0 or w <= 0:
            continue
        if emit or h * w <= _LEAF_AREA:
            pieces.append((np.arange(y0, y1)[:, None] * width + np.arange(x0, x1)[None, :]).ravel())
        elif h >= w:
            m = y0 + h // 2
            stack += [(m, m + 1, x0, x1, True), (m + 1, y1, x0, x1, False), (y0, m, x0, x1, False)]
        else:
            m = x0 + w // 2
            stack += [(y0, y1, m, m + 1, True), (y0, y1, m + 1, x1, False), (y0, y1, x0, m, False)]
    order = np.concatenate(pieces)
    rank = np.empty(height * width, dtype=np.int64)
    rank[order] = np.arange(height * width)
    rank.flags.writeable = False
    return rank


@functools.lru_cache(maxsize=16)
def _nested_dissection_order(height: int, width: int) -> np.ndarray:
    """Flat pixel indices in elimination order (the inverse of :func:`nested_dissection_rank`)."""
    order = np.argsort(nested_dissection_rank(height, width))
    order.flags.writeable = False
    return order


def _solve_spd(matrix: scipy.sparse.csc_matrix, rhs: np.ndarray) -> np.ndarray:
    """``matrix^-1 rhs`` for an SPD ``matrix``, factorised by SuperLU in its own column order."""
    # SPD: no pivoting, and keep our own (nested-dissection) column order.
    lu = splu(matrix, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    return lu.solve(rhs)


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tables of the pixel grid padded by one pixel on every side, so a neighbour is an index plus an
    offset, without bounds checks: each pixel's index in the padded grid, the 8 neighbours' offsets
    there (in :data:`NEIGHBOUR_WEIGHTS`' order), and each pixel's ``d_i`` (the summed weight of its
    in-image neighbours, added in that order). Read-only, as they are cached."""
    ys, xs = np.divmod(np.arange(height * width), width)
    padded = (ys + 1) * (width + 2) + xs + 1
    offsets = np.array([dy * (width + 2) + dx for dy, dx, _ in NEIGHBOUR_WEIGHTS])
    diag = np.zeros(height * width)
    for dy, dx, weight in NEIGHBOUR_WEIGHTS:
        diag[(ys + dy >= 0) & (ys + dy < height) & (xs + dx >= 0) & (xs + dx < width)] += weight
    for table in (padded, offsets, diag):
        table.flags.writeable = False
    return padded, offsets, diag


def _solve_group(image: np.ndarray, removed: np.ndarray, height: int, width: int) -> list[np.ndarray]:
    """Imputed values of the removed pixels for a group of masks.

    Args:
        image: ``(C, H*W)`` float64 image.
        removed: ``(M, H*W)`` bool, True where a pixel is removed; every mask keeps
            at least one pixel.
        height: Image height.
        width: Image width.

    Returns:
        One ``(C, k_m)`` float64 array per mask, columns in ascending pixel order.
    """
    m_count, n_pix = removed.shape
    channels = image.shape[0]
    # The building holds padded planes per mask ((H+2)(W+2) x (1 + C) x 8 bytes): many small masks
    # (a low percentage packs a group with them) are built and solved a few at a time, so memory
    # follows the unknowns, not masks x pixels. The masks' systems are independent either way.
    most = max(1, _BUILD_BYTES // ((height + 2) * (width + 2) * 8 * (1 + channels)))
    if m_count > most:
        return [v for s in range(0, m_count, most) for v in _solve_group(image, removed[s:s + most], height, width)]
    if not removed.any():
        return [np.zeros((channels, 0)) for _ in range(m_count)]
    padded, offsets, diag_of = _grid(height, width)
    n_pad = (height + 2) * (width + 2)
    by_rank = _nested_dissection_order(height, width)
    # Unknowns numbered mask by mask, in nested-dissection order within a mask.
    mask_of, pos = np.nonzero(removed[:, by_rank])
    pixel = by_rank[pos]
    n_var = pixel.size
    at = mask_of * n_pad + padded[pixel]  # each unknown's place in its mask's padded plane
    # Per mask, a padded plane of unknown numbers (-1: kept or outside the image) and one of the
    # image where kept (0: removed or outside), so each offset is one gather from each.
    var_of = np.full(m_count * n_pad, -1, dtype=np.int64)
    var_of[at] = np.arange(n_var)
    kept_mask, kept_pixel = np.nonzero(~removed)
    known = np.zeros((m_count * n_pad, channels))  # a pixel's channels side by side: one gather per offset
    known[kept_mask * n_pad + padded[kept_pixel]] = image[:, kept_pixel].T

    # Column j of the symmetric matrix: -w_ij at each removed neighbour i, d_j on the diagonal;
    # right-hand side: the weighted kept neighbours (a removed or outside one adds w * 0).
    rows = np.empty((n_var, 9), dtype=np.int64)
    vals = np.empty((n_var, 9))
    rhs = np.zeros((n_var, channels))
    for k, (offset, (_, _, weight)) in enumerate(zip(offsets, NEIGHBOUR_WEIGHTS, strict=True)):
        neighbour = at + offset
        rows[:, k] = var_of[neighbour]
        vals[:, k] = -weight
        rhs += weight * known[neighbour]
    rows[:, 8] = np.arange(n_var)
    vals[:, 8] = diag_of[pixel]
    present = rows >= 0  # row indices within a column are not sorted (SuperLU does not need them sorted)
    indptr = np.zeros(n_var + 1, dtype=np.int64)
    np.cumsum(present.sum(axis=1), out=indptr[1:])
    matrix = scipy.sparse.csc_matrix((vals[present], rows[present], indptr), shape=(n_var, n_var))
    solution = _solve_spd(matrix, rhs)

    out = []
    for m in range(m_count):
        # ascending pixel order, like the mask's flat indices
        out.append(solution[var_of[m * n_pad + padded[np.flatnonzero(removed[m])]]].T)
    return out


def _group(counts: Sequence[int], max_unknowns: int) -> Iterator[list[int]]:
    """Consecutive groups of mask indices with at most ``max_unknowns`` in total (at least one mask)."""
    group: list[int] = []
    total = 0
    for i, k in enumerate(counts):
        if group and total + k > max_unknowns:
            yield group
            group, total = [], 0
        group.append(i)
        total += k
    if group:
        yield group


class ImputationStream:
    """Noise-free ROAD imputations of one image under many masks, in mask order, solved ahead.

    Masks are solved in groups (one block-diagonal system each) on ``workers``
    threads, at most ``lookahead`` groups per worker ahead of the consumer, so a
    caller can run the model on finished images while later ones are solved;
    :attr:`solving` tells whether a worker is busy right now (a caller on the CPU
    can then leave it a core). Masks are read only when their group is solved, so
    ``masks`` may be a lazy sequence (e.g. one that unpacks bits) to keep memory
    flat. Use it as a context manager (or call :meth:`close`) so the workers stop
    when the consumer does.

    Args:
        image: ``(C, H, W)`` image (already normalised, as the model sees it).
        masks: ``(H*W,)`` bool arrays, True where a pixel is removed. Each must
            keep at least one pixel.
        workers: Solver threads; 0 solves on the consumer's thread.
        group_unknowns: Target number of unknowns per block-diagonal system.
        lookahead: Groups in flight per worker.

    Iterating yields, for each mask, the ``(C, k)`` float64 values of its ``k``
    removed pixels in ascending flat pixel order (the order of ``np.flatnonzero(mask)``).

    Raises:
        ValueError: If a mask removes every pixel (the system has no data).
    """

    def __init__(self, image: torch.Tensor, masks: Sequence[np.ndarray], *, workers: int = 1,
                 group_unknowns: int = 60_000, lookahead: int = 4) -> None:
        channels, self.height, self.width = image.shape
        self.n_pix = self.height * self.width
        self.flat = image.detach().to("cpu", torch.float64).reshape(channels, self.n_pix).numpy()
        self.masks = masks
        counts = [int(np.count_nonzero(masks[i])) for i in range(len(masks))]
        if self.n_pix in counts:
            raise ValueError("masks: a mask removes every pixel, so there is nothing to impute from")
        self.groups = list(_group(counts, group_unknowns))
        self.pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
        self.in_flight = max(1, workers * lookahead)
        self.pending: list[Future[list[np.ndarray]]] = []

    def _solve(self, idx: list[int]) -> list[np.ndarray]:
        removed = np.stack([np.asarray(self.masks[i], dtype=bool).reshape(self.n_pix) for i in idx])
        return _solve_group(self.flat, removed, self.height, self.width)

    @property
    def solving(self) -> bool:
        """Whether a solver thread is at work (not merely holding finished groups)."""
        return any(not f.done() for f in self.pending)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.pool is None:
            for idx in self.groups:
                yield from self._solve(idx)
            return
        upcoming = iter(self.groups)
        while True:
            while len(self.pending) < self.in_flight:
                idx = next(upcoming, None)
                if idx is None:
                    break
                self.pending.append(self.pool.submit(self._solve, idx))
            if not self.pending:
                return
            yield from self.pending.pop(0).result()

    def close(self) -> None:
        """Cancel the groups not yet started and stop the solver threads (waits for running ones)."""
        for fut in self.pending:
            fut.cancel()
        self.pending.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def __enter__(self) -> ImputationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def linear_imputation(image: torch.Tensor, removed: torch.Tensor, *, workers: int = 1) -> torch.Tensor:
    """Noise-free ROAD linear imputation of one image under many masks.

    Args:
        image: ``(C, H, W)`` image.
        removed: ``(M, H, W)`` bool, True where a pixel is removed.
        workers: Solver threads; 1 solves on the calling thread.

    Returns:
        ``(M, C, H, W)`` images in ``image``'s dtype: kept pixels unchanged,
        removed pixels imputed.

    Example:
        >>> img = torch.zeros(1, 3, 3); img[0, 0, 0] = 9.0
        >>> mask = torch.zeros(1, 3, 3, dtype=torch.bool); mask[0, 1, 1] = True
        >>> float(linear_imputation(img, mask)[0, 0, 1, 1])  # 1/12 of the corner
        0.75
    """
    channels, height, width = image.shape
    removed_np = removed.detach().cpu().numpy().reshape(-1, height * width).astype(bool)
    out = image.detach().cpu().reshape(1, channels, height * width).repeat(removed_np.shape[0], 1, 1)
    with ImputationStream(image, list(removed_np), workers=workers if workers > 1 else 0) as stream:
        for m, values in enumerate(stream):
            idx = torch.from_numpy(np.flatnonzero(removed_np[m]))
            out[m][:, idx] = torch.from_numpy(values).to(out.dtype)
    return out.reshape(-1, channels, height, width)
