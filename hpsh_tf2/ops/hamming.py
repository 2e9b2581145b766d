"""Hamming distances and exact Hamming top-k over packed binary codes.

Distances are XOR + ``tf.raw_ops.PopulationCount`` over machine words (see
:func:`hpsh_tf2.ops.codes.pack_words`). :func:`hamming_topk` is exact brute force with a
two-stage selection that avoids running ``top_k`` over every distance:

1. **Group minima.** The database is cut into consecutive groups of ``group_size`` codes. For
   each query and group, the minimum distance ``m_g`` is computed in one fused pass (XLA on by
   default); the group's key is ``(m_g, g)``. Within a chunk of ``Gc`` groups, the groups
   ``j, j + Gc / F, j + 2 Gc / F, ...`` form fold ``j`` (``F`` folds of ``Gc / F`` columns),
   whose key is the best key of its groups. The best ``k'`` folds are kept (``k' = k + 1``
   with ``exclude_self``, else ``k``), merging per-chunk top-k's.
2. **Refinement.** The codes of the ``k'`` selected folds (plus the ``N mod group_size`` tail
   codes) are re-scored and ranked by ``(distance, index)``.

Why it is exact: let ``x`` be one of the true top-``k`` items (ranked by distance, then
index), in group ``g``, in a fold that was not selected. Each of the ``k'`` selected folds has
a better key than that fold, so its best group ``h`` has ``(m_h, h) < (m_g, g)``, and the
minimiser ``y`` of ``h`` has ``d(y) = m_h <= m_g <= d(x)``; on equality ``h < g``, and groups
are contiguous, so ``y``'s index is smaller. That gives ``k'`` distinct items ranked before
``x`` (at most one of them the excluded query itself), a contradiction. Ties are therefore
broken by database index, lower first, on every device; no step relies on ``top_k``'s own tie
order. ``F = 1`` is plain group selection.

**Kernel.** One kernel serves every code length: XOR + popcount on the words, and the group
minimum taken as an elementwise ``minimum`` over the ``S`` rows of a ``[W, S, Gc]`` chunk
(group-minor layout), unrolled over ``S`` (``group_size <= 64``; larger groups fall back to
``reduce_min``) and over the ``W`` words. Every term is then a contiguous ``[Gc]`` row, so the
fused XLA loop vectorises over groups. Per-code distances are summed in ``uint8`` below 256
bits and in ``uint16`` from 256 bits (a 256-bit distance does not fit a byte).

**Padded rows (XLA).** The kernel reads ``S * W`` rows at once. With ``Gc`` a power of two the
rows lie a power-of-two number of bytes apart, every stream maps to the same L1 cache set, and
the streams evict each other: the kernel ran at the speed of L3. Each row is therefore padded
by one cache line (64 bytes). Measured on a 2-core AMD EPYC, 256 queries x 131,072 codes of 256
bits, group keys only: 644 -> 253 ps per distance (2.5x); whole search, 1,000 queries x 1M
codes: 16 bits 6,300 -> 10,100 q/s, 256 bits 1,550 -> 2,550 q/s (before folding).

**Folds.** ``top_k`` over every group key was a quarter of the search time once the kernel
was fast. Folding (``F`` up to 8, with at most 4,096 extra refined codes per query) cuts the
``top_k`` input ``F`` times: 256 bits 2,550 -> 3,090 q/s, 16 bits 10,100 -> 13,600 q/s. The
fold's maximum is its own XLA call: fused into the scoring loop it stopped LLVM vectorising
(10x slower). The refinement's scoring is XLA-compiled too; ``top_k`` never is, because XLA's
CPU ``top_k`` runs on one core.

**512-bit vectors.** XLA's CPU backend vectorises with 256-bit registers unless ``XLA_FLAGS``
asks for 512 (:func:`hpsh_tf2.xla.prefer_wide_vectors`, which the CLI calls first thing); an
AVX-512 CPU then runs the popcount as ``vpopcntq`` (see ``bench/bench_search.py``).

**Without XLA** (``jit_compile=False``, the SavedModel ``retrieve`` signature) the same ops run
as separate graph ops over ``[Qc, Gc]`` tensors, with ``Qc = 128`` (1.2x-1.45x faster than 32);
no padding (each op reads one row), and the folds reduced with one ``reduce_max``.

**Not used: the inner-product form** ``d = (K - <2q-1, 2x-1>) / 2`` (exact in float32 for
``K <= 2**24``). Measured on the 2-core AVX (no AVX2) CPU of an earlier session, group minima
only, 256 queries x 16,384 codes, million codes per second:

======  ==================  =================  =================
bits    popcount, unrolled  float32 matmul     float32 matmul
        (XLA)               (oneDNN, no XLA)   (XLA)
======  ==================  =================  =================
16      4,091               233                208
64      335                 109                121
256     86                  38                 31
======  ==================  =================  =================

It needs ``2 K`` flops per distance against a few popcounts per 64 bits; on a GPU it may win
for long codes and should be measured there.
"""

from __future__ import annotations

import tensorflow as tf

from hpsh_tf2.ops.checks import check_int
from hpsh_tf2.ops.codes import pack_words

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_GROUP_SIZE", "hamming_distances", "hamming_topk"]

DEFAULT_GROUP_SIZE = 32
_LONG_CODE_GROUP_SIZE = 16  # 256+ bits, XLA popcount path (bench/bench_search.py)
DEFAULT_CHUNK_SIZE = 131072
_DEFAULT_QUERY_CHUNK = {True: 256, False: 128}  # bench/bench_search.py
_REDUCE_QUERY_CHUNK = 32  # no XLA, group_size > 64: [Qc, chunk_size] words per step
_REFINE_BUDGET = 1 << 21
_UNROLL_LIMIT = 64
_ROW_PAD_BYTES = 64  # one cache line (see _Layout)
_MAX_FOLD = 8
_FOLD_CANDIDATES = 4096  # refined codes per query that folding may add up to


def _check_packed(packed: tf.Tensor, name: str) -> None:
    """Raises unless ``packed`` is a ``uint8`` ``[N, bytes]`` tensor with a static last axis."""
    if packed.dtype != tf.uint8:
        raise TypeError(f"Received: {name} with dtype {packed.dtype.name}; expected uint8 packed")
    if packed.shape.rank != 2 or packed.shape[-1] is None:
        raise ValueError(
            f"Received: {name} with shape {packed.shape}; expected [N, bits / 8] with a static "
            "last axis"
        )


def _check_widths(query: tf.Tensor, db: tf.Tensor) -> None:
    """Raises if the two packed code arrays have different code lengths."""
    if query.shape[-1] != db.shape[-1]:
        raise ValueError(
            f"Received: query_packed with shape {query.shape} and db_packed with shape "
            f"{db.shape}; expected the same number of bytes per code"
        )


def _popcount_sum(xored: tf.Tensor, axis: int) -> tf.Tensor:
    """Popcount of words summed over ``axis`` (the word axis), as int32."""
    counts = tf.raw_ops.PopulationCount(x=xored)
    if xored.shape[axis] == 1:
        return tf.cast(tf.squeeze(counts, axis), tf.int32)
    return tf.reduce_sum(tf.cast(counts, tf.int32), axis=axis)


def hamming_distances(query_packed: tf.Tensor, db_packed: tf.Tensor) -> tf.Tensor:
    """All pairwise Hamming distances between packed codes.

    ``d(q, x) = popcount(q XOR x)`` summed over the words of a code.

    Args:
        query_packed: ``uint8`` ``[Q, bits / 8]`` packed codes.
        db_packed: ``uint8`` ``[N, bits / 8]`` packed codes.

    Returns:
        ``int32`` tensor ``[Q, N]``. Memory is ``O(Q * N)``: use :func:`hamming_topk` for large
        databases.
    """
    query_packed = tf.convert_to_tensor(query_packed)
    db_packed = tf.convert_to_tensor(db_packed)
    _check_packed(query_packed, "query_packed")
    _check_packed(db_packed, "db_packed")
    _check_widths(query_packed, db_packed)
    query, db = pack_words(query_packed), pack_words(db_packed)
    xored = tf.bitwise.bitwise_xor(query[:, None, :], db[None, :, :])
    return _popcount_sum(xored, axis=2)


def _fold_keys(
    query: tf.Tensor,
    chunk: tf.Tensor,
    valid: tf.Tensor,
    layout: _Layout,
    jit: bool,
) -> tf.Tensor:
    """Negated keys ``-(m_g * Gc + g)`` of the best group of each fold, one db chunk.

    Fold ``j`` holds the chunk's groups ``j, j + Gc / F, j + 2 Gc / F, ...`` (``F`` =
    ``layout.fold``); its key is the largest (best) of its groups' keys.

    Args:
        query: ``[Qc, W]`` query words.
        chunk: ``[W, S, Gc + pad]`` database words, group-minor layout.
        valid: Number of real (unpadded) groups in the chunk (int32 scalar).
        layout: The database layout (static sizes).
        jit: Use the XLA-compiled kernels. The group keys and the fold are two separate XLA
            calls: fused into one loop, the scoring stopped vectorising (10x slower).

    Returns:
        ``int32`` ``[Qc, Gc / F]``; larger is better (``top_k`` friendly).
    """
    width = tf.shape(chunk, out_type=tf.int32)[-1] - layout.pad
    keys = (_group_keys_xla if jit else _group_keys)(
        query,
        chunk,
        width,
        valid,
        layout.sentinel,
        layout.num_words,
        layout.group_size,
        layout.pad,
    )
    if layout.fold == 1:
        return keys
    return (_fold_max_xla if jit else _fold_max)(keys, layout.fold)


def _fold_max(keys: tf.Tensor, fold: int) -> tf.Tensor:
    """Elementwise maximum of the ``fold`` consecutive column blocks of ``keys`` ``[Qc, Gc]``."""
    stride = tf.shape(keys)[-1] // fold
    return tf.reduce_max(tf.reshape(keys, [tf.shape(keys)[0], fold, stride]), axis=1)


def _group_keys(
    query: tf.Tensor,
    rows: tf.Tensor,
    width: tf.Tensor,
    valid: tf.Tensor,
    sentinel: int,
    num_words: int,
    group_size: int,
    pad: int = 0,
) -> tf.Tensor:
    """Negated group keys ``-(m_g * width + g)`` of the ``width`` groups of one db chunk.

    Args:
        query: ``[Qc, W]`` query words.
        rows: ``[W, S, width + pad]`` database words, group-minor layout (vectorises over
            groups).
        width: Groups in the chunk (int32 scalar).
        valid: Number of real (unpadded) groups in the chunk (int32 scalar).
        sentinel: Distance given to padded groups (> any real distance).
        num_words: ``W`` (static; the traced shapes may be relaxed).
        group_size: ``S`` (static).
        pad: Padding words at the end of each row, ignored (static; see :class:`_Layout`).

    Returns:
        ``int32`` ``[Qc, width]``; larger is better (``top_k`` friendly).
    """
    query = tf.ensure_shape(query, [None, num_words])
    rows = tf.ensure_shape(rows, [num_words, group_size, None])
    if pad:
        rows = rows[:, :, : tf.shape(rows)[2] - pad]
    # Narrow accumulators vectorise best: uint8 while a distance fits (< 256 bits), else uint16.
    dtype = tf.uint8 if num_words * rows.dtype.size * 8 < 256 else tf.uint16
    if group_size > _UNROLL_LIMIT:
        minima = tf.reduce_min(_word_sum(query[:, :, None], rows, num_words, dtype), axis=1)
    else:
        # An elementwise minimum over the S slices (each a contiguous row) keeps the fused
        # loop vectorised over groups; a reduce over S gathers with stride Gc instead, which is
        # several times slower once a code has more than one word.
        minima = None
        for position in range(group_size):
            dist = _word_sum(query, rows[:, position], num_words, dtype)
            minima = dist if minima is None else tf.minimum(minima, dist)
    local = tf.range(width)
    minima = tf.where(local < valid, tf.cast(minima, tf.int32), sentinel)
    return -(minima * width + local)


def _word_sum(query: tf.Tensor, rows: tf.Tensor, num_words: int, dtype: tf.DType) -> tf.Tensor:
    """Hamming distances of ``query`` ``[Qc, W, ...]`` to ``rows`` ``[W, ...]``, unrolled over W.

    Words are summed with unrolled adds (``W`` is static) so XLA fuses everything.
    """
    total = None
    for word in range(num_words):
        xored = tf.bitwise.bitwise_xor(query[:, word, None], rows[word][None])
        counts = tf.cast(tf.raw_ops.PopulationCount(x=xored), dtype)
        total = counts if total is None else total + counts
    return total


_group_keys_xla = tf.function(_group_keys, jit_compile=True, reduce_retracing=True)
_fold_max_xla = tf.function(_fold_max, jit_compile=True, reduce_retracing=True)


class _Layout:
    """Shapes and tensors of the chunked database, computed once per call."""

    def __init__(
        self, db: tf.Tensor, group_size: int, groups_per_chunk: int, fold: int = 1, pad: int = 0
    ) -> None:
        shape = tf.shape(db, out_type=tf.int64)
        self.num_items = shape[0]
        self.num_words = db.shape[1]
        self.sentinel = db.dtype.size * 8 * self.num_words + 1
        self.num_groups = self.num_items // group_size
        main = self.num_groups * group_size
        chunk_groups = tf.maximum(
            tf.minimum(tf.constant(groups_per_chunk, tf.int64), self.num_groups), 1
        )
        chunk_groups = (chunk_groups + fold - 1) // fold * fold
        self.fold = fold
        self.num_chunks = (self.num_groups + chunk_groups - 1) // chunk_groups
        padded_groups = tf.maximum(self.num_chunks, 1) * chunk_groups
        groups = tf.reshape(db[:main], [-1, group_size, self.num_words])
        self.groups = tf.pad(groups, [[0, padded_groups - self.num_groups], [0, 0], [0, 0]])
        chunks = tf.reshape(self.groups, [-1, chunk_groups, group_size, self.num_words])
        # Rows padded by ``pad`` words: with power-of-two row strides the kernel's S * W
        # load streams all map to the same L1 cache set and evict each other.
        self.chunks = tf.pad(tf.transpose(chunks, [0, 3, 2, 1]), [[0, 0]] * 3 + [[0, pad]])
        self.pad = pad
        self.chunk_groups = chunk_groups
        self.key_base = padded_groups
        self.tail = db[main:]
        self.group_size = group_size


def _select_groups(query: tf.Tensor, layout: _Layout, num_select: int, jit: bool) -> tf.Tensor:
    """Negated global keys ``[Qc, num_select]`` of the best folds, each the key of its best
    group (``int64.min`` fill)."""
    best = tf.fill(tf.stack([tf.shape(query)[0], num_select]), tf.constant(tf.int64.min))
    width = layout.chunk_groups
    per_chunk = tf.cast(tf.minimum(width // layout.fold, num_select), tf.int32)

    def body(index: tf.Tensor, best: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        offset = index * width
        valid = tf.cast(tf.minimum(layout.num_groups - offset, width), tf.int32)
        keys = _fold_keys(query, layout.chunks[index], valid, layout, jit)
        local = -tf.cast(tf.math.top_k(keys, per_chunk, sorted=False).values, tf.int64)
        chunk_best = -((local // width) * layout.key_base + offset + local % width)
        merged = tf.math.top_k(tf.concat([best, chunk_best], axis=1), num_select, sorted=False)
        return index + 1, merged.values

    _, best = tf.while_loop(
        lambda index, _: index < layout.num_chunks,
        body,
        [tf.constant(0, tf.int64), best],
        shape_invariants=[tf.TensorShape([]), tf.TensorShape([None, num_select])],
    )
    return best


def _refine(
    query: tf.Tensor,
    query_ids: tf.Tensor,
    best: tf.Tensor,
    layout: _Layout,
    k: int,
    exclude_self: bool,
    jit: bool,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Exact top-k among the codes of the selected groups (or folds) and the tail."""
    keys = (_candidate_keys_xla if jit else _candidate_keys)(
        query,
        query_ids,
        best,
        layout.groups,
        layout.tail,
        tf.stack([layout.key_base, layout.chunk_groups, layout.num_groups, layout.num_items]),
        layout.sentinel,
        layout.num_words,
        layout.group_size,
        layout.fold,
        exclude_self,
    )
    keys = -tf.math.top_k(-keys, k).values
    base = tf.maximum(layout.num_items, 1)
    return tf.cast(keys % base, tf.int32), tf.cast(keys // base, tf.int32)


def _candidate_keys(
    query: tf.Tensor,
    query_ids: tf.Tensor,
    best: tf.Tensor,
    groups: tf.Tensor,
    tail: tf.Tensor,
    sizes: tf.Tensor,
    sentinel: int,
    num_words: int,
    group_size: int,
    fold: int,
    exclude_self: bool,
) -> tf.Tensor:
    """Keys ``d * N + i`` (smaller is better) of every candidate code of each query row.

    Args:
        query: ``[Qc, W]`` query words.
        query_ids: ``[Qc]`` database index of each query (``exclude_self``).
        best: ``[Qc, k']`` negated global keys of the selected groups or folds
            (``int64.min``: none).
        groups: ``[G, S, W]`` database words by group (padded).
        tail: ``[T, W]`` the codes after the last whole group.
        sizes: ``int64`` ``[key base, groups per chunk, real groups, N]``.
        sentinel: A distance larger than any real one (marks invalid candidates).
        num_words: ``W`` (static; the traced shapes may be relaxed).
        group_size: ``S`` (static).
        fold: Groups per fold (static).
        exclude_self: Drop database item ``query_ids[r]`` from row ``r``.

    Returns:
        ``int64`` ``[Qc, k' * fold * S + T]`` candidate keys.
    """
    key_base, width, num_groups, num_items = (sizes[i] for i in range(4))
    size = group_size
    query = tf.ensure_shape(query, [None, num_words])
    groups = tf.ensure_shape(groups, [None, size, num_words])
    tail = tf.ensure_shape(tail, [None, num_words])
    num_rows = tf.shape(query)[0]
    valid_group = best > tf.int64.min
    group_ids = tf.math.floormod(-tf.where(valid_group, best, 0), key_base)
    if fold > 1:
        # Expand each selected fold to its member groups (strided within the chunk).
        stride = width // fold
        start = group_ids // width * width + group_ids % stride
        group_ids = start[:, :, None] + tf.range(fold, dtype=tf.int64) * stride
        group_ids = tf.reshape(group_ids, [num_rows, -1])
        valid_group = tf.repeat(valid_group, fold, axis=1)
    item_ids = group_ids[:, :, None] * size + tf.range(size, dtype=tf.int64)
    valid = valid_group[:, :, None] & (item_ids < num_groups * size)
    words = tf.reshape(tf.gather(groups, group_ids), [num_rows, -1, num_words])
    tail_count = tf.shape(tail)[0]
    tail_ids = num_groups * size + tf.range(tail_count, dtype=tf.int64)
    item_ids = tf.reshape(item_ids, [num_rows, -1])
    item_ids = tf.concat([item_ids, tf.tile(tail_ids[None], [num_rows, 1])], axis=1)
    valid = tf.reshape(valid, [num_rows, -1])
    valid = tf.concat([valid, tf.ones([num_rows, tail_count], tf.bool)], axis=1)
    words = tf.concat([words, tf.tile(tail[None], [num_rows, 1, 1])], axis=1)
    if exclude_self:
        valid &= item_ids != query_ids[:, None]
    dist = tf.cast(_popcount_sum(tf.bitwise.bitwise_xor(query[:, None, :], words), 2), tf.int64)
    dist = tf.where(valid, dist, tf.constant(sentinel, tf.int64))
    return dist * tf.maximum(num_items, 1) + item_ids


_candidate_keys_xla = tf.function(_candidate_keys, jit_compile=True, reduce_retracing=True)


def _check_available(
    num_queries: tf.Tensor, num_items: tf.Tensor, k: int, exclude_self: bool
) -> list[tf.Operation]:
    """Static (when shapes are known) or runtime checks of ``k`` against the database size."""
    available = num_items - int(exclude_self)
    static_items = tf.get_static_value(num_items)
    static_queries = tf.get_static_value(num_queries)
    protocol = " (database minus the query, exclude_self=True)" if exclude_self else ""
    if static_items is not None:
        if k > static_items - int(exclude_self):
            raise ValueError(
                f"Received: k={k} with {static_items} database items{protocol}; expected "
                f"k <= {static_items - int(exclude_self)}"
            )
        if exclude_self and static_queries is not None and static_queries > static_items:
            raise ValueError(
                f"Received: {static_queries} queries and {static_items} database items with "
                "exclude_self=True; expected query i to be database item i, so Q <= N"
            )
        return []
    checks = [
        tf.debugging.assert_less_equal(
            tf.constant(k, tf.int64), available, message=f"k exceeds the database size{protocol}"
        )
    ]
    if exclude_self:
        checks.append(
            tf.debugging.assert_less_equal(
                num_queries, num_items, message="exclude_self=True needs Q <= N"
            )
        )
    return checks


def hamming_topk(
    query_packed: tf.Tensor,
    db_packed: tf.Tensor,
    *,
    k: int,
    exclude_self: bool = False,
    chunk_size: int | None = None,
    query_chunk_size: int | None = None,
    group_size: int | None = None,
    jit_compile: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Exact Hamming k-nearest neighbours, ties broken by database index (lower first).

    Args:
        query_packed: ``uint8`` ``[Q, bits / 8]`` packed query codes.
        db_packed: ``uint8`` ``[N, bits / 8]`` packed database codes.
        k: Number of neighbours per query; at most ``N`` (``N - 1`` with ``exclude_self``).
        exclude_self: Query ``i`` is database item ``i`` and is never returned (the "paper"
            protocol: database = evaluation set minus the query). Needs ``Q <= N``.
        chunk_size: Database codes scored per step (a multiple of ``group_size``); default
            131072. Working memory per step is about ``4 * query_chunk_size * chunk_size /
            group_size`` bytes (int32 group keys), plus a transposed copy of the database
            words (rows padded by 64 bytes with XLA).
        query_chunk_size: Queries per step; default 256 with XLA, 128 without (the non-XLA
            path materialises ``[query_chunk_size, chunk_size / group_size]`` intermediates;
            32 when ``group_size > 64``, where it materialises ``query_chunk_size *
            chunk_size`` words). Lowered so that a step refines at most about 2M candidate
            codes (large ``k``).
        group_size: Codes per group in the first stage (see the module docstring); default
            32, or 16 for codes of 256+ bits with XLA (the unrolled loop of ``S * W``
            popcounts stays vectorised).
        jit_compile: XLA-compile the scoring passes. Set False for graphs that must run where
            XLA is unavailable (e.g. a TF Serving binary without XLA); measured 0.07x to 0.1x
            the XLA speed (``bench/bench_search.py``).

    Returns:
        ``(indices, distances)``: ``int32`` tensors ``[Q, k]``, sorted by ``(distance,
        index)``.
    """
    query_packed = tf.convert_to_tensor(query_packed)
    db_packed = tf.convert_to_tensor(db_packed)
    _check_packed(query_packed, "query_packed")
    _check_packed(db_packed, "db_packed")
    _check_widths(query_packed, db_packed)
    k = check_int("k", k, minimum=1)
    width_bits = 8 * query_packed.shape[-1]
    if group_size is None:
        long_popcount = bool(jit_compile) and width_bits >= 256
        group_size = _LONG_CODE_GROUP_SIZE if long_popcount else DEFAULT_GROUP_SIZE
    group_size = check_int("group_size", group_size, minimum=1)
    chunk_size = check_int("chunk_size", chunk_size or DEFAULT_CHUNK_SIZE, minimum=group_size)
    if chunk_size % group_size:
        raise ValueError(
            f"Received: chunk_size={chunk_size}; expected a multiple of group_size={group_size}"
        )
    if (width_bits + 66) * (chunk_size // group_size) >= 2**31:
        raise ValueError(
            f"Received: chunk_size={chunk_size} with group_size={group_size} for {width_bits}-bit "
            "codes; expected (bits + 66) * chunk_size / group_size < 2**31 (int32 group keys)"
        )
    default_query_chunk = _DEFAULT_QUERY_CHUNK[bool(jit_compile)]
    if not jit_compile and group_size > _UNROLL_LIMIT:
        default_query_chunk = _REDUCE_QUERY_CHUNK
    query_chunk = check_int("query_chunk_size", query_chunk_size or default_query_chunk, minimum=1)
    fold = _fold(k + int(exclude_self), group_size, chunk_size // group_size)
    # Bounds the refinement stage (query rows x candidate codes) for large k.
    query_chunk = min(query_chunk, max(1, _REFINE_BUDGET // ((k + 1) * group_size * fold)))
    _check_available(
        tf.shape(query_packed, out_type=tf.int64)[0],
        tf.shape(db_packed, out_type=tf.int64)[0],
        k,
        exclude_self,
    )
    return _search_graph(
        query_packed,
        db_packed,
        width=int(query_packed.shape[-1]),
        k=k,
        exclude_self=bool(exclude_self),
        group_size=group_size,
        groups_per_chunk=chunk_size // group_size,
        query_chunk=query_chunk,
        jit=bool(jit_compile),
        fold=fold,
    )


def _fold(num_select: int, group_size: int, groups_per_chunk: int) -> int:
    """Groups per fold: the largest power of two up to ``_MAX_FOLD`` that keeps the refined
    codes per query (``num_select * fold * group_size``) within ``_FOLD_CANDIDATES``."""
    fold = 1
    while (
        fold * 2 <= _MAX_FOLD
        and num_select * fold * 2 * group_size <= _FOLD_CANDIDATES
        and groups_per_chunk % (fold * 2) == 0
    ):
        fold *= 2
    return fold


def _search_impl(
    query_packed: tf.Tensor,
    db_packed: tf.Tensor,
    *,
    width: int,
    k: int,
    exclude_self: bool,
    group_size: int,
    groups_per_chunk: int,
    query_chunk: int,
    jit: bool,
    fold: int,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The search as one graph (avoids per-op eager dispatch inside the loops)."""
    query_packed = tf.ensure_shape(query_packed, [None, width])
    db_packed = tf.ensure_shape(db_packed, [None, width])
    query, db = pack_words(query_packed), pack_words(db_packed)
    num_queries = tf.shape(query, out_type=tf.int64)[0]
    checks = _check_available(num_queries, tf.shape(db, out_type=tf.int64)[0], k, exclude_self)
    with tf.control_dependencies(checks):
        pad = _ROW_PAD_BYTES // db.dtype.size if jit else 0
        layout = _Layout(tf.identity(db), group_size, groups_per_chunk, fold, pad)
    return _search_all(query, num_queries, layout, k, exclude_self, query_chunk, jit)


_search_graph = tf.function(_search_impl, reduce_retracing=True)


def _search_all(
    query: tf.Tensor,
    num_queries: tf.Tensor,
    layout: _Layout,
    k: int,
    exclude_self: bool,
    query_chunk: int,
    jit: bool,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Loops over query chunks (the last one zero-padded) and concatenates the results."""
    rows = tf.maximum(tf.minimum(tf.constant(query_chunk, tf.int64), num_queries), 1)
    num_steps = tf.maximum((num_queries + rows - 1) // rows, 1)
    padded = tf.pad(query, [[0, num_steps * rows - num_queries], [0, 0]])
    num_select = k + int(exclude_self)
    arrays = [
        tf.TensorArray(tf.int32, size=tf.cast(num_steps, tf.int32), infer_shape=False)
        for _ in range(2)
    ]

    def body(step: tf.Tensor, indices: tf.TensorArray, dists: tf.TensorArray):
        start = step * rows
        chunk = padded[start : start + rows]
        query_ids = start + tf.range(rows, dtype=tf.int64)
        best = _select_groups(chunk, layout, num_select, jit)
        chunk_idx, chunk_dist = _refine(chunk, query_ids, best, layout, k, exclude_self, jit)
        position = tf.cast(step, tf.int32)
        return step + 1, indices.write(position, chunk_idx), dists.write(position, chunk_dist)

    _, indices, dists = tf.while_loop(
        lambda step, *_: step < num_steps, body, [tf.constant(0, tf.int64), *arrays]
    )
    indices = tf.reshape(indices.concat(), [-1, k])[:num_queries]
    dists = tf.reshape(dists.concat(), [-1, k])[:num_queries]
    return indices, dists
