"""Archive-scale retrieval: an index of codes that grows with the archive (issue 13).

Modules: :mod:`~hpsh_tf2.index.walk` (list and fingerprint files), :mod:`~hpsh_tf2.index.encoder`
(encode with an export's ``serving_default``), :mod:`~hpsh_tf2.index.backend` (the
``IndexBackend`` protocol the verbs use, structured filters), :mod:`~hpsh_tf2.index.store` (the
Milvus backend: the collection and its model record), :mod:`~hpsh_tf2.index.memory` (the
in-memory backend saved to an ``.npz``), :mod:`~hpsh_tf2.index.build` (incremental builds, search),
:mod:`~hpsh_tf2.index.beam` (the encoder as an Apache Beam pipeline) and
:mod:`~hpsh_tf2.index.commands` (the ``index`` CLI verb).
"""
