"""Hamming distances and exact Hamming top-k over packed binary codes.

Distances are XOR + ``tf.raw_ops.PopulationCount`` over machine words (see
:func:`hpsh_tf2.ops.codes.pack_words`). :func:`hamming_topk` is exact brute force with a
two-stage selection that avoids running ``top_k`` over every distance:

1. **Group minima.** The database is cut into consecutive groups of ``group_size`` codes. For
   each query and group, the minimum distance ``m_g`` is computed in one fused pass (XLA on by
   default). Groups are ranked by the key ``(m_g, g)`` and the best ``k'`` are kept
   (``k' = k + 1`` with ``exclude_self``, else ``k``), merging per-chunk top-k's.
2. **Refinement.** The codes of the ``k'`` selected groups (plus the ``N mod group_size``
   tail codes) are re-scored and ranked by ``(distance, index)``.

Why it is exact: let ``x`` be one of the true top-``k`` items (ranked by distance, then
index) lying in a group ``g`` that was not selected. Each of the ``k'`` selected groups ranks
before ``g``, so its minimiser ``y`` has ``d(y) <= m_g <= d(x)``; on equality the selected
group has a smaller group index, and groups are contiguous, so ``y``'s index is smaller. That
gives ``k'`` items ranked before ``x`` (at most one of them the excluded query itself), a
contradiction. Ties are therefore broken by database index, lower first, on every device; no
step relies on ``top_k``'s own tie order.

**Kernel.** One kernel serves every code length: XOR + popcount on the words, and the group
minimum taken as an elementwise ``minimum`` over the ``S`` rows of a ``[W, S, Gc]`` chunk
(group-minor layout), unrolled over ``S`` (``group_size <= 64``; larger groups fall back to
``reduce_min``) and over the ``W`` words. Every term is then a contiguous ``[Gc]`` row, so the
fused XLA loop vectorises over groups; a ``reduce_min`` over ``S`` made LLVM gather with
stride ``Gc`` once a code has two or more words (the old 0.2x-FAISS slowdown at 128 bits).
Without XLA the same unrolled form keeps every intermediate at ``[Qc, Gc]`` (cache resident)
instead of materialising ``[Qc, S, Gc]``. Per-code distances are summed in ``uint8`` below
256 bits and in ``uint16`` from 256 bits (a 256-bit distance does not fit a byte).

**512-bit vectors.** XLA's CPU backend vectorises with 256-bit registers unless
``XLA_FLAGS`` asks for 512 (:func:`hpsh_tf2.xla.prefer_wide_vectors`, which the CLI calls first
thing). With 512-bit vectors an AVX-512 CPU runs the popcount as ``vpopcntq`` and the whole
search gets 1.8x (64 bits), 2.0x (128 bits) and 1.5x (256 bits) faster (2-core AMD EPYC,
1,000 queries x 1M codes). The popcount kernel above is then the fastest at every length.

**SWAR kernel (XLA with 256-bit vectors, 72 to 1984 bits).** When 512-bit vectors are not
requested, codes of two or more ``uint64`` words count bits "SIMD within a register"
(:func:`_swar_word_sum`): per word a few shifts, masks and adds on full 64-bit lanes give eight
byte counts, the words' byte counts are added in place, and one multiply folds them per code.
It skips the per-word popcount and the narrowing to ``uint8``/``uint16``. Measured on a 2-core
AMD EPYC (AVX-512; XLA emits 256-bit vectors without ``vpopcntq``), whole search, 1,000 queries
x 1M codes, q/s: 128 bits 1,382 -> 1,596, 256 bits 657 -> 865, with its best chunk of 32,768
codes (the default on this path; a chunk's words then stay in L2). Without XLA it is several
times slower (a graph op per step), so the non-XLA path keeps the popcount.

Measured on the 2-core AVX (no AVX2) development CPU of an earlier session, group minima only,
256 queries x 16,384 codes, million codes per second (one process, machine loaded; compare
within a row):

======  ==================  =====================  =================  =================
bits    popcount, unrolled  popcount, reduce (old)  float32 matmul     float32 matmul
                            (XLA)                   (oneDNN, no XLA)   (XLA)
======  ==================  =====================  =================  =================
16      4,091               1,164                   233                208
32      648                 465                     210                132
64      335                 313                     109                121
128     157                 29                      45                 65
256     86                  17                      38                 31
======  ==================  =====================  =================  =================

The inner-product form ``d = (K - <2q-1, 2x-1>) / 2`` (exact in float32 for ``K <= 2**24``)
loses at every length on this CPU (no AVX2/AVX-512 for oneDNN), so it is not used; on a GPU
or a wide-SIMD CPU it may win for long codes and should be measured there.

Only the group-minimum pass is XLA-compiled (``jit_compile=True``); ``top_k`` is never
compiled by XLA because XLA's CPU ``top_k`` runs on one core.
"""

from __future__ import annotations

import tensorflow as tf

from hpsh_tf2.ops.checks import check_int
from hpsh_tf2.ops.codes import pack_words
from hpsh_tf2.xla import wide_vectors_requested

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_GROUP_SIZE", "hamming_distances", "hamming_topk"]

DEFAULT_GROUP_SIZE = 32
_LONG_CODE_GROUP_SIZE = 16  # 256+ bits, XLA popcount path (bench/bench_search.py)
DEFAULT_CHUNK_SIZE = 131072
_SWAR_CHUNK_SIZE = 32768  # measured best for the SWAR kernel (65 to 256 bits, XLA)
_DEFAULT_QUERY_CHUNK = {True: 256, False: 32}
_REFINE_BUDGET = 1 << 21
_UNROLL_LIMIT = 64
_SWAR_MAX_WORDS = 31  # byte counts of the words are summed in place: 8 * W <= 255


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


def _group_keys(
    query: tf.Tensor,
    chunk: tf.Tensor,
    valid: tf.Tensor,
    sentinel: int,
    num_words: int,
    group_size: int,
    swar: bool = False,
) -> tf.Tensor:
    """Negated chunk-local group keys ``-(m_g * Gc + g)`` for one query and one db chunk.

    Args:
        query: ``[Qc, W]`` query words.
        chunk: ``[W, S, Gc]`` database words, group-minor layout (vectorises over groups).
        valid: Number of real (unpadded) groups in the chunk (int32 scalar).
        sentinel: Distance given to padded groups (> any real distance).
        num_words: ``W`` (static; the traced shapes may be relaxed).
        group_size: ``S`` (static).
        swar: Count bits with :func:`_swar_word_sum` (``uint64`` words only; faster under XLA
            for codes of two or more words, much slower without XLA).

    Returns:
        ``int32`` ``[Qc, Gc]``; larger is better (``top_k`` friendly).
    """
    query = tf.ensure_shape(query, [None, num_words])
    chunk = tf.ensure_shape(chunk, [num_words, group_size, None])
    # Narrow accumulators vectorise best: uint8 while a distance fits (< 256 bits), else uint16.
    dtype = tf.uint8 if num_words * chunk.dtype.size * 8 < 256 else tf.uint16
    if swar and group_size <= _UNROLL_LIMIT:
        minima = None
        for position in range(group_size):
            dist = _swar_word_sum(query, chunk[:, position], num_words)
            minima = dist if minima is None else tf.minimum(minima, dist)
    elif group_size <= _UNROLL_LIMIT:
        # An elementwise minimum over the S slices (each a contiguous [Gc] row) keeps the fused
        # loop vectorised over groups; a reduce over S gathers with stride Gc instead, which is
        # several times slower once a code has more than one word.
        minima = None
        for position in range(group_size):
            dist = _word_sum(query, chunk[:, position], num_words, dtype)
            minima = dist if minima is None else tf.minimum(minima, dist)
    else:
        dist = _word_sum(query[:, :, None], chunk, num_words, dtype)
        minima = tf.reduce_min(dist, axis=1)
    minima = tf.cast(minima, tf.int32)
    width = tf.shape(chunk)[-1]
    local = tf.range(width)
    minima = tf.where(local < valid, minima, sentinel)
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


_M1 = 0x5555555555555555
_M2 = 0x3333333333333333
_M4 = 0x0F0F0F0F0F0F0F0F
_M8 = 0x00FF00FF00FF00FF
_ONES16 = 0x0001000100010001


def _swar_word_sum(query: tf.Tensor, rows: tf.Tensor, num_words: int) -> tf.Tensor:
    """Hamming distances (``uint64``) of ``query`` ``[Qc, W]`` to ``rows`` ``[W, Gc]``, counted
    in-register ("SIMD within a register") instead of with a popcount per word.

    Each XORed word becomes eight byte counts (each <= 8) with the classic shift-and-mask
    steps; the byte counts of all ``W`` words are added as they are (<= 8 W per byte, so
    ``W <= 31``), then folded once per code: bytes pairwise into four 16-bit lanes, and the
    lanes summed by one multiply into the top 16 bits. Per word this is a few shifts, masks
    and adds on full 64-bit lanes, with one fold per code instead of a popcount and a narrowing
    conversion per word.
    """
    m1, m2, m4, m8, ones = (tf.constant(v, tf.uint64) for v in (_M1, _M2, _M4, _M8, _ONES16))
    shift = tf.bitwise.right_shift
    total = None
    for word in range(num_words):
        x = tf.bitwise.bitwise_xor(query[:, word, None], rows[word][None])
        x = x - (shift(x, tf.constant(1, tf.uint64)) & m1)
        x = (x & m2) + (shift(x, tf.constant(2, tf.uint64)) & m2)
        x = (x + shift(x, tf.constant(4, tf.uint64))) & m4
        total = x if total is None else total + x
    lanes = (total & m8) + (shift(total, tf.constant(8, tf.uint64)) & m8)
    return shift(lanes * ones, tf.constant(48, tf.uint64))


_group_keys_xla = tf.function(_group_keys, jit_compile=True, reduce_retracing=True)


class _Layout:
    """Shapes and tensors of the chunked database, computed once per call."""

    def __init__(self, db: tf.Tensor, group_size: int, groups_per_chunk: int) -> None:
        shape = tf.shape(db, out_type=tf.int64)
        self.num_items = shape[0]
        self.num_words = db.shape[1]
        self.sentinel = db.dtype.size * 8 * self.num_words + 1
        self.bits_plus_one = tf.constant(self.sentinel, tf.int64)
        self.num_groups = self.num_items // group_size
        main = self.num_groups * group_size
        chunk_groups = tf.maximum(
            tf.minimum(tf.constant(groups_per_chunk, tf.int64), self.num_groups), 1
        )
        self.num_chunks = (self.num_groups + chunk_groups - 1) // chunk_groups
        padded_groups = tf.maximum(self.num_chunks, 1) * chunk_groups
        groups = tf.reshape(db[:main], [-1, group_size, self.num_words])
        self.groups = tf.pad(groups, [[0, padded_groups - self.num_groups], [0, 0], [0, 0]])
        chunks = tf.reshape(self.groups, [-1, chunk_groups, group_size, self.num_words])
        self.chunks = tf.transpose(chunks, [0, 3, 2, 1])
        self.chunk_groups = chunk_groups
        self.key_base = padded_groups
        self.tail = db[main:]
        self.tail_ids = tf.range(main, self.num_items, dtype=tf.int64)
        self.group_size = group_size


def _select_groups(
    query: tf.Tensor, layout: _Layout, num_select: int, jit: bool, swar: bool
) -> tf.Tensor:
    """Negated global keys ``[Qc, num_select]`` of the best groups (``int64.min`` fill)."""
    keys_fn = _group_keys_xla if jit else _group_keys
    best = tf.fill(tf.stack([tf.shape(query)[0], num_select]), tf.constant(tf.int64.min))
    width = layout.chunk_groups
    per_chunk = tf.cast(tf.minimum(width, num_select), tf.int32)

    def body(index: tf.Tensor, best: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        offset = index * width
        valid = tf.cast(tf.minimum(layout.num_groups - offset, width), tf.int32)
        keys = keys_fn(
            query,
            layout.chunks[index],
            valid,
            layout.sentinel,
            layout.num_words,
            layout.group_size,
            swar,
        )
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
) -> tuple[tf.Tensor, tf.Tensor]:
    """Exact top-k among the codes of the selected groups and the tail."""
    valid_group = best > tf.int64.min
    group_ids = tf.math.floormod(-tf.where(valid_group, best, 0), layout.key_base)
    size = layout.group_size
    item_ids = group_ids[:, :, None] * size + tf.range(size, dtype=tf.int64)
    valid = valid_group[:, :, None] & (item_ids < layout.num_groups * size)
    words = tf.gather(layout.groups, group_ids)
    num_rows = tf.shape(query)[0]
    item_ids = tf.reshape(item_ids, [num_rows, -1])
    valid = tf.reshape(valid, [num_rows, -1])
    words = tf.reshape(words, [num_rows, -1, layout.num_words])
    tail_count = tf.shape(layout.tail_ids)[0]
    item_ids = tf.concat([item_ids, tf.tile(layout.tail_ids[None], [num_rows, 1])], axis=1)
    valid = tf.concat([valid, tf.ones([num_rows, tail_count], tf.bool)], axis=1)
    words = tf.concat([words, tf.tile(layout.tail[None], [num_rows, 1, 1])], axis=1)
    if exclude_self:
        valid &= item_ids != query_ids[:, None]
    dist = tf.cast(_popcount_sum(tf.bitwise.bitwise_xor(query[:, None, :], words), 2), tf.int64)
    dist = tf.where(valid, dist, layout.bits_plus_one)
    base = tf.maximum(layout.num_items, 1)
    keys = -tf.math.top_k(-(dist * base + item_ids), k).values
    return tf.cast(keys % base, tf.int32), tf.cast(keys // base, tf.int32)


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
            131072, or 32768 on the SWAR path (XLA without 512-bit vectors, 72 to 1984
            bits). Working memory per step
            is about ``4 * query_chunk_size * chunk_size / group_size`` bytes with XLA (int32
            group keys), plus a transposed copy of the database words.
        query_chunk_size: Queries per step; default 256 with XLA, 32 without (the non-XLA path
            materialises ``[query_chunk_size, chunk_size / group_size]`` intermediates, or
            ``query_chunk_size * chunk_size`` words when ``group_size > 64``). Lowered so
            that a step refines at most about 2M candidate codes (large ``k``).
        group_size: Codes per group in the first stage (see the module docstring); default
            32, or 16 for codes of 256+ bits on the popcount XLA path (measured 1.17-1.22x
            faster there with 512-bit vectors; no difference at 128 bits).
        jit_compile: XLA-compile the group-minimum pass. Set False for graphs that must run
            where XLA is unavailable (e.g. a TF Serving binary without XLA); measured 0.4x to
            1.1x the XLA speed depending on the code length (``bench/bench_search.py``).

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
    swar = (
        bool(jit_compile)
        and 64 < width_bits <= 64 * _SWAR_MAX_WORDS
        and not wide_vectors_requested()
    )
    if group_size is None:
        long_popcount = bool(jit_compile) and not swar and width_bits >= 256
        group_size = _LONG_CODE_GROUP_SIZE if long_popcount else DEFAULT_GROUP_SIZE
    group_size = check_int("group_size", group_size, minimum=1)
    default_chunk = _SWAR_CHUNK_SIZE if swar else DEFAULT_CHUNK_SIZE
    chunk_size = check_int("chunk_size", chunk_size or default_chunk, minimum=group_size)
    if chunk_size % group_size:
        raise ValueError(
            f"Received: chunk_size={chunk_size}; expected a multiple of group_size={group_size}"
        )
    if (width_bits + 66) * (chunk_size // group_size) >= 2**31:
        raise ValueError(
            f"Received: chunk_size={chunk_size} with group_size={group_size} for {width_bits}-bit "
            "codes; expected (bits + 66) * chunk_size / group_size < 2**31 (int32 group keys)"
        )
    query_chunk = check_int(
        "query_chunk_size",
        query_chunk_size or _DEFAULT_QUERY_CHUNK[bool(jit_compile)],
        minimum=1,
    )
    # Bounds the refinement stage (query rows x candidate codes) for large k.
    query_chunk = min(query_chunk, max(1, _REFINE_BUDGET // ((k + 1) * group_size)))
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
        swar=swar,
    )


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
    swar: bool,
) -> tuple[tf.Tensor, tf.Tensor]:
    """The search as one graph (avoids per-op eager dispatch inside the loops)."""
    query_packed = tf.ensure_shape(query_packed, [None, width])
    db_packed = tf.ensure_shape(db_packed, [None, width])
    query, db = pack_words(query_packed), pack_words(db_packed)
    num_queries = tf.shape(query, out_type=tf.int64)[0]
    checks = _check_available(num_queries, tf.shape(db, out_type=tf.int64)[0], k, exclude_self)
    with tf.control_dependencies(checks):
        layout = _Layout(tf.identity(db), group_size, groups_per_chunk)
    return _search_all(query, num_queries, layout, k, exclude_self, query_chunk, jit, swar)


_search_graph = tf.function(_search_impl, reduce_retracing=True)


def _search_all(
    query: tf.Tensor,
    num_queries: tf.Tensor,
    layout: _Layout,
    k: int,
    exclude_self: bool,
    query_chunk: int,
    jit: bool,
    swar: bool,
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
        best = _select_groups(chunk, layout, num_select, jit, swar)
        chunk_idx, chunk_dist = _refine(chunk, query_ids, best, layout, k, exclude_self)
        position = tf.cast(step, tf.int32)
        return step + 1, indices.write(position, chunk_idx), dists.write(position, chunk_dist)

    _, indices, dists = tf.while_loop(
        lambda step, *_: step < num_steps, body, [tf.constant(0, tf.int64), *arrays]
    )
    indices = tf.reshape(indices.concat(), [-1, k])[:num_queries]
    dists = tf.reshape(dists.concat(), [-1, k])[:num_queries]
    return indices, dists
