"""The groups of a rank set: which images the all-pairs loss compares, and at which rank in their group.

The ranking stage (``pylayers.rank_data``, ``pylayers.rank_loss``, ``rankiqa.rank_accuracy``) reads a rank
manifest's rows ``reference, type, level, path``: one group per (reference, ``type``), ranked by ``level``
(0 = pristine = best), and the loss takes every pair of a group. A group's levels must therefore be totally
ordered in quality.

* One-distortion types (``tid2013``, ``live``): a type is one group, pristine then levels 1..L, as generated.
* Two-distortion (grid) types (``mlive``: blur then JPEG or noise, 3x3 cells ``(b, s)``): the cells are only
  partially ordered. Cell (b, s) is at least as distorted as (b', s') when b >= b' and s >= s'; (1, 3) and
  (3, 1) are not comparable. The groups are *chains*: for each blur level b the chain pristine < (b, 1) <
  (b, 2) < (b, 3) (type ``<TYPE>_GB<b>``), and for each second level s the chain pristine < (1, s) < (2, s)
  < (3, s) (type ``<TYPE>_<second><s>``, e.g. ``GBJPEG_JPEG2``). The pairs the loss sees are exactly those
  within a chain: pristine against each cell (twice: once in the cell's blur chain, once in its second
  chain) and each pair of cells that share one level and differ in the other (once). Pairs that differ in
  both levels the same way, e.g. (1, 1) < (2, 2), are ordered but not compared directly (they follow
  through (1, 2) or (2, 1)); pairs that differ in opposite ways, e.g. (1, 2) and (2, 1), are never compared.
  Chains are used because the loss ranks by one level per group; a partial order would need a second label
  through the data layer, the net and the loss.

Each image is generated once (``make_ranks.relative_path`` of its type and generated level); a cell's image
is listed in two chains, and the pristine image in every chain.
"""

from __future__ import annotations

from collections.abc import Sequence

from data_prep import distortions

#: A member of a group: (rank level in the group, generated type, generated level; 0 = pristine).
Member = tuple[int, str, int]


def groups(rankset: str, types: Sequence[str]) -> list[tuple[str, list[Member]]]:
    """The groups of ``types`` of ``rankset``: ``(group type, members in rank order)``, types in the order
    given; ``InputError`` for an unknown rank set."""
    n_levels = distortions.levels(rankset)
    out: list[tuple[str, list[Member]]] = []
    for dtype in types:
        if dtype in distortions.GRID_TYPES:
            out += grid_chains(dtype)
        else:
            out.append((dtype, [(level, dtype, level) for level in range(n_levels + 1)]))
    return out


def grid_chains(dtype: str) -> list[tuple[str, list[Member]]]:
    """The chains of grid type ``dtype`` (module docstring): the first distortion held at each level with the
    second rising, then the second held with the first rising; each from the pristine image (rank 0)."""
    first, second = distortions.GRID_TYPES[dtype]
    steps = range(1, distortions.GRID_LEVELS + 1)
    chains: list[tuple[str, list[Member]]] = []
    for held, name in ((0, first), (1, second)):
        for fixed in steps:
            members: list[Member] = [(0, dtype, 0)]
            for rank in steps:
                cell = (fixed, rank) if held == 0 else (rank, fixed)
                members.append((rank, dtype, distortions.grid_level(dtype, *cell)))
            chains.append((f"{dtype}_{name}{fixed}", members))
    return chains
