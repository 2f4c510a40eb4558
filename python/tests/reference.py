# SPDX-License-Identifier: MIT
"""The scatter and gather written out from their definitions, in plain
torch and Python loops, slowly and obviously: what the tests compare the
library against. Nothing here calls the library."""
import torch


def roundup(v, a):
    return (v + a - 1) // a * a


def local_ids(ids, num_experts, expert_map=None):
    """[N][K] Python lists of local expert ids, -1 where none."""
    out = []
    for row in ids.tolist():
        loc = []
        for i in row:
            if i >= 0 and expert_map is not None:
                i = int(expert_map[i])
            loc.append(i if i >= 0 else -1)
        out.append(loc)
    return out


def capacity_bound(layout, n, k, e, alignment):
    if n == 0:
        return 0
    if layout == "masked":
        return n * k
    return roundup(n * k + min(e, n * k) * (alignment - 1), alignment)


def ue8m0_words(scales_row, n_words):
    """Four exponent bytes to a word, low byte first, zero bytes past S;
    as int32 (the word's bits)."""
    bits = scales_row.contiguous().view(torch.int32).tolist()
    bytes_ = [(b >> 23) & 0xFF for b in bits]
    words = []
    for w in range(n_words):
        v = 0
        for j in range(4):
            s = 4 * w + j
            if s < len(bytes_):
                v |= bytes_[s] << (8 * j)
        if v >= 1 << 31:
            v -= 1 << 32
        words.append(v)
    return torch.tensor(words, dtype=torch.int32)


class Scattered:
    """The expected outputs. ``placed`` maps each output row holding a token
    to that token, ``sources`` to that choice's t*K + k; rows not in them
    are padding. ``end_unpadded`` is expert_end with unpadded_end."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def scatter(x, ids, num_experts, x_scales=None, *, layout="contiguous",
            alignment=128, expert_map=None, capacity=None,
            scale_format="fp32", scale_block=128, label_padding=False):
    # x None: an index-only scatter, whose index outputs are the same.
    n = ids.shape[0]
    h = x.shape[1] if x is not None else 1
    k = ids.shape[1]
    e_n = num_experts
    loc = local_ids(ids, e_n, expert_map)
    if capacity is None:
        capacity = capacity_bound(layout, n, k, e_n, alignment)
    counts = [0] * e_n
    for t in range(n):
        for kk in range(k):
            if loc[t][kk] >= 0:
                counts[loc[t][kk]] += 1
    if layout == "masked":
        start = [e * capacity for e in range(e_n)]
        end = [e * capacity + capacity for e in range(e_n)]
        rows = e_n * capacity
    else:
        start, end, pos = [], [], 0
        for e in range(e_n):
            start.append(pos)
            pos += roundup(counts[e], alignment)
            end.append(pos)
        rows = capacity
    next_slot = [0] * e_n
    out_index = [[-1] * k for _ in range(n)]
    placed = {}
    sources = {}
    dropped = 0
    for t in range(n):  # ascending t*K + k
        for kk in range(k):
            e = loc[t][kk]
            if e < 0:
                continue
            if layout == "masked" and next_slot[e] >= capacity:
                dropped += 1
                continue
            row = start[e] + next_slot[e]
            next_slot[e] += 1
            out_index[t][kk] = row
            placed[row] = t
            sources[row] = t * k + kk
    m_indices = None
    if layout == "contiguous":
        m_indices = [-1] * rows
        for e in range(e_n):
            for r in range(start[e], start[e] + counts[e]):
                m_indices[r] = e
            if label_padding:
                for r in range(start[e] + counts[e], end[e]):
                    m_indices[r] = e
    masked_m = [min(c, capacity) for c in counts] \
        if layout == "masked" else None
    end_unpadded = [start[e] + (masked_m[e] if masked_m else counts[e])
                    for e in range(e_n)]
    s = -(-h // scale_block)
    expected_scales = None
    if x_scales is not None:
        if scale_format == "fp32":
            expected_scales = {r: x_scales[t, :s] for r, t in placed.items()}
        else:
            nw = -(-s // 4)
            expected_scales = {r: ue8m0_words(x_scales[t, :s], nw)
                               for r, t in placed.items()}
    return Scattered(rows=rows, capacity=capacity, counts=counts, start=start,
                     end=end, end_unpadded=end_unpadded, out_index=out_index,
                     placed=placed, sources=sources, m_indices=m_indices,
                     masked_m=masked_m, dropped=dropped,
                     scales=expected_scales, n_scales=s)


def row_source(want, pad):
    """row_source of a scatter: t*K + k on each placed row, pad elsewhere,
    over all rows (flat, masked included)."""
    return [want.sources.get(r, pad) for r in range(want.rows)]


def align_block_size(ids, block_size, num_experts, expert_map=None,
                     pad_sorted_ids=False):
    """vLLM's moe_align_block_size conventions, written out: the sizes from
    the shapes, each local expert's choices in ascending flat index order
    (the flat index of ids), each expert's rows rounded up to block_size,
    padding rows and the tail holding numel, expert_ids the expert of each
    block and -1 past the last one used. With a map, choices it sends to
    -1 are left out and the experts are its values. Python lists."""
    flat = ids.reshape(-1).tolist()
    numel = len(flat)
    padded = numel + num_experts * (block_size - 1)
    if pad_sorted_ids:
        padded = roundup(padded, block_size)
    if numel < num_experts:
        padded = min(numel * block_size, padded)
    local = []
    for i in flat:
        if i >= 0 and expert_map is not None:
            i = int(expert_map[i])
        local.append(i)
    n_local = num_experts if expert_map is None else len(expert_map)
    sorted_ids = [numel] * padded
    expert_ids = [-1] * (-(-padded // block_size))
    pos = 0
    for e in range(n_local):
        mine = [j for j, le in enumerate(local) if le == e]
        if not mine:
            continue
        sorted_ids[pos:pos + len(mine)] = mine
        blocks = -(-len(mine) // block_size)
        for b in range(blocks):
            expert_ids[pos // block_size + b] = e
        pos += blocks * block_size
    return sorted_ids, expert_ids, [pos]


def gather(y, out_index, weights=None, out_dtype=None, init=None):
    """fp32 accumulation in k order, each product and each sum rounded to
    fp32 (separate torch ops: no fused multiply-add), then one rounding to
    the output dtype."""
    y2 = y.reshape(-1, y.shape[-1])
    n, k = out_index.shape
    h = y2.shape[1]
    out_dtype = out_dtype or y.dtype
    idx = out_index.tolist()
    rows = []
    for t in range(n):
        acc = init[t].float().clone() if init is not None \
            else torch.zeros(h, dtype=torch.float32)
        for kk in range(k):
            r = idx[t][kk]
            if r < 0:
                continue
            w = torch.tensor(1.0 if weights is None else
                             float(weights[t, kk]), dtype=torch.float32)
            p = torch.mul(y2[r].float(), w)
            acc = torch.add(acc, p)
        rows.append(acc)
    res = torch.stack(rows) if rows else torch.zeros(0, h)
    return res.to(out_dtype)


def same_bits(a, b):
    """Equal bit for bit (NaNs included), for any dtype."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.is_floating_point:
        view = {1: torch.uint8, 2: torch.int16, 4: torch.int32,
                8: torch.int64}[a.element_size()]
        return torch.equal(a.contiguous().view(view),
                           b.contiguous().view(view))
    return torch.equal(a, b)
