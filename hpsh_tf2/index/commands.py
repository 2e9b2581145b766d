"""The ``index`` verb of the CLI (``python cli.py index build|search|info``) and ``query --index``.

Wiring (in :mod:`hpsh_tf2.cli`): ``add_parser(verbs)`` adds the verb to the sub-parsers, and
``run(args)`` runs it when ``args.verb == "index"``. :func:`query_index` is what
``query --index`` calls.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpsh_tf2.config import add_config_arguments
from hpsh_tf2.index import scene_commands

__all__ = [
    "add_parser",
    "add_query_options",
    "known_query_labels",
    "labels_for_build",
    "query_index",
    "resolve",
    "run",
    "run_query",
]


def _index_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--uri",
        help="index URI: a Milvus Lite file or http://host:19530, or the .npz file of "
        "index.backend=memory (default: index.uri of the config, else <output.workdir>/index.db "
        "or index.npz)",
    )
    parser.add_argument("--collection", help="collection name (default: index.collection)")


def _where_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="keep neighbours whose class, path, size or mtime_ns matches: class=Airport, "
        "class=Beach,Port (any of), size=0..50000 (inclusive range); repeatable (all must "
        "match); any index.backend. class=Forest also matches multi-label rows 'Forest;River'",
    )


def _query_labels_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--query-labels",
        metavar="A;B",
        help="the first query's labels, to frame the grid's hits green (a shared label) or red "
        "(default: its labels in the last build's --labels list when the query lies under the "
        "archive folder; else unknown: grey frames)",
    )


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    """Adds the ``index`` verb (with ``build``, ``search``, ``info``) to CLI sub-parsers."""
    index = verbs.add_parser(
        "index", help="archive index (index.backend: milvus or memory): build, search, info"
    )
    actions = index.add_subparsers(dest="index_action", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="encode new/changed images, drop deleted ones")
    build.add_argument("--images", metavar="DIR", help="archive folder")
    build.add_argument(
        "--labels",
        metavar="FILE",
        help="list of images and labels (.csv 'path,labels' with labels separated by ';', or "
        '.jsonl {"path": ..., "labels": [...]}), paths relative to --images: each row stores '
        "its labels sorted by name as 'A;B' in class, unlisted files class ''. Default: the "
        "config's data.manifest when --images is data.root (data.format null or manifest), "
        "else the first folder under --images",
    )
    scene_commands.add_build_options(build)
    build.add_argument(
        "--model",
        metavar="EXPORT_DIR",
        help="export/<name> or a version folder (default: <output.workdir>/export/<name>)",
    )
    build.add_argument(
        "--runner",
        choices=("local", "beam"),
        help="encode in-process (local) or with an Apache Beam pipeline (default: index.runner)",
    )
    build.add_argument(
        "--beam-option",
        dest="beam_options",
        action="append",
        default=[],
        metavar="OPT",
        help="a Beam pipeline option, e.g. --beam-option=--runner=FlinkRunner (repeatable)",
    )
    build.add_argument("--quiet", action="store_true", help="no progress line")
    build.add_argument(
        "--prune",
        action="store_true",
        help="remove the rows of vanished files or scenes even when --images / --scenes holds "
        "none or more than index.max_remove_fraction of the rows would go",
    )
    _index_options(build)
    add_config_arguments(build, example="index.uri=http://host:19530")

    search = actions.add_parser("search", help="nearest indexed images of a query image")
    search.add_argument("--image", action="append", help="query (repeatable)")
    search.add_argument("--top", type=int, default=10, help="neighbours (default 10)")
    search.add_argument(
        "--filter", default="", help="Milvus only: a filter expression, e.g. 'class == \"Airport\"'"
    )
    _where_option(search)
    _query_labels_option(search)
    search.add_argument("--out", help="save a retrieval grid PNG of the first query here")
    search.add_argument(
        "--model", metavar="EXPORT_DIR", help="encode with this export (default: the index's)"
    )
    search.add_argument(
        "--image-root", help="archive folder, to draw the grid (default: the last build's)"
    )
    scene_commands.add_search_options(search)
    _index_options(search)
    add_config_arguments(search, example="index.uri=http://host:19530")

    info = actions.add_parser("info", help="rows, classes and model of the index")
    info.add_argument("--json", action="store_true", help="print JSON")
    scene_commands.add_info_options(info)
    _index_options(info)
    add_config_arguments(info, example="index.uri=http://host:19530")
    return index


def add_query_options(query: argparse.ArgumentParser) -> None:
    """Adds ``--index`` (and ``--filter``, ``--uri``, ``--collection``) to the ``query`` verb."""
    query.add_argument(
        "--index",
        action="store_true",
        help="search the archive index (index.uri) instead of the SavedModel's database",
    )
    query.add_argument(
        "--filter", default="", help="with --index on Milvus: a Milvus filter expression"
    )
    _where_option(query)
    _query_labels_option(query)
    _index_options(query)


def resolve(args: argparse.Namespace) -> tuple[Any, str, str]:
    """The config, index URI and collection of parsed arguments."""
    from hpsh_tf2.config import load_config
    from hpsh_tf2.index.backend import resolve_index_uri

    config = load_config(getattr(args, "config", None), getattr(args, "overrides", []))
    uri = resolve_index_uri(
        config.index.backend, getattr(args, "uri", None) or config.index.uri, config.workdir
    )
    collection = getattr(args, "collection", None) or config.index.collection
    return config, uri, collection


def _default_model(config: Any) -> str:
    from hpsh_tf2.layout import RunLayout

    return str(RunLayout(config.workdir).export_model(config.export.name or config.name))


def _last_build(uri: str, workdir: Path) -> dict[str, Any]:
    from hpsh_tf2.index.build import status_path

    status = status_path(uri, workdir)
    if not status.is_file():
        return {}
    return json.loads(status.read_text(encoding="utf-8"))


def _last_root(uri: str, workdir: Path) -> str | None:
    return _last_build(uri, workdir).get("images_root")


def known_query_labels(
    image: str | os.PathLike[str], image_root: str | None, labels_file: str | None
) -> str | None:
    """The labels (``"A;B"``) that the index's list of images gives a query image.

    Known when the image lies under ``image_root`` (the archive folder) and ``labels_file``
    (the last build's ``--labels``) lists its relative path; else None (unknown).
    """
    from hpsh_tf2.index.build import archive_labels

    if not image_root or not labels_file or not Path(labels_file).is_file():
        return None
    try:
        rel = Path(os.path.abspath(image)).relative_to(os.path.abspath(image_root)).as_posix()
    except ValueError:
        return None
    return archive_labels(labels_file).text.get(rel)


def labels_for_build(labels: str | None, images: str, config: Any) -> str | None:
    """The list of images whose labels ``index build --images`` stores.

    ``--labels FILE`` when given; else the config's ``data.manifest`` when ``images`` is the
    config's ``data.root`` (the manifest's folder when ``data.root`` is unset) and
    ``data.format`` reads a ``path,labels`` manifest (null or ``manifest``); else None (the
    first folder under ``images`` is the class).
    """
    if labels:
        return labels
    data = config.data
    if not data.manifest or data.format not in (None, "manifest"):
        return None
    root = data.root or os.path.dirname(os.path.abspath(os.path.expanduser(data.manifest)))
    same = os.path.realpath(os.path.expanduser(images)) == os.path.realpath(
        os.path.expanduser(root)
    )
    return data.manifest if same else None


def query_index(
    model: str | os.PathLike[str] | None,
    images: Sequence[str | os.PathLike[str]],
    *,
    uri: str,
    collection: str = "hpsh",
    backend: str = "milvus",
    top: int = 10,
    filters: Any = None,
    filter: str = "",
) -> list[list[Any]]:
    """``query --index``: neighbours from the archive index, as :class:`serving.Neighbour` lists.

    Args:
        model: The export to encode with (None: the one recorded in the index; another one is
            refused).
        images: Query image files.
        uri: Index URI.
        collection: Collection name.
        backend: ``index.backend``.
        top: Neighbours per query.
        filters: Structured filters (:func:`hpsh_tf2.index.backend.parse_where`).
        filter: Milvus only: a filter expression on the metadata.

    Returns:
        One list of neighbours per query (``label`` is -1: the index stores class names).
    """
    from hpsh_tf2.index.build import hits_as_neighbours, search_images

    hits = search_images(
        images,
        uri=uri,
        collection=collection,
        backend=backend,
        model_dir=model,
        top=top,
        filters=filters,
        filter=filter,
    )
    return [hits_as_neighbours(h) for h in hits]


def run_query(args: argparse.Namespace) -> int:
    """``query --index``: prints each query's neighbours from the index (and the grid)."""
    from hpsh_tf2.evaluation.code_health import tie_note
    from hpsh_tf2.index.backend import parse_where
    from hpsh_tf2.serving import format_neighbours, save_query_grid

    config, uri, collection = resolve(args)
    results = query_index(
        args.model,
        args.image,
        uri=uri,
        collection=collection,
        backend=config.index.backend,
        top=args.top,
        filters=parse_where(args.where),
        filter=args.filter,
    )
    for image, neighbours in zip(args.image, results):
        print(f"query: {image} (index {uri})")
        print(format_neighbours(neighbours))
        note = tie_note([n.distance for n in neighbours])
        if note:
            print(note)
    if args.out:
        last = _last_build(uri, config.workdir)
        root = args.image_root or last.get("images_root")
        query_labels = args.query_labels or known_query_labels(
            args.image[0], root, (last.get("labels") or {}).get("file")
        )
        save_query_grid(
            args.out, args.image[0], results[0], image_root=root, query_class=query_labels
        )
        print(f"wrote {args.out}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from hpsh_tf2.index.build import build_index

    config, uri, collection = resolve(args)
    if bool(args.images) == bool(args.scenes):
        from hpsh_tf2.errors import UsageError

        raise UsageError("Received: index build; expected exactly one of --images, --scenes PATH")
    if args.scenes:
        if args.labels:
            from hpsh_tf2.errors import UsageError

            raise UsageError("Received: index build --scenes with --labels; expected --images")
        model = args.model or _default_model(config)
        return scene_commands.run_build(args, config, uri, collection, model)
    if not getattr(args, "verbose", False):
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
    report = build_index(
        args.model or _default_model(config),
        args.images,
        uri=uri,
        collection=collection,
        backend=config.index.backend,
        batch_size=config.index.batch_size,
        index_type=config.index.index_type,
        nlist=config.index.nlist,
        runner=args.runner or config.index.runner,
        beam_options=args.beam_options,
        workdir=config.workdir,
        progress=not args.quiet,
        max_remove_fraction=config.index.max_remove_fraction,
        prune=args.prune,
        labels=labels_for_build(args.labels, args.images, config),
    )
    print(report.summary())
    return 0


def _search(args: argparse.Namespace) -> int:
    if args.top <= 0:
        raise ValueError(f"Received: --top={args.top}; expected a positive integer")
    if scene_commands.is_scene_search(args):
        config, uri, collection = resolve(args)
        return scene_commands.run_search(args, config, uri, collection)
    if not args.image:
        from hpsh_tf2.errors import UsageError

        raise UsageError("Received: index search without --image; expected --image FILE")
    return run_query(args)


def _info(args: argparse.Namespace) -> int:
    from hpsh_tf2.index.build import index_info

    config, uri, collection = resolve(args)
    if args.scenes_index:
        return scene_commands.run_info(args, config, uri, collection)
    info = index_info(uri, collection, backend=config.index.backend, workdir=config.workdir)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    model = info["model"]
    print(f"index {uri} (collection {collection!r}, {info['backend']}): {info['rows']} images")
    print(
        f"  model: {model['model_name']} v{model['version']}, {model['bits']} bits, "
        f"{model['backbone']} at {model['image_size']} px, id {model['model_id']}, "
        f"from {model['export_path']}"
    )
    classes = ", ".join(f"{name or '(none)'}: {n}" for name, n in info["classes"].items())
    print(f"  classes ({len(info['classes'])}; an image counts once per label): {classes}")
    last = info.get("last_build")
    if last:
        print(
            f"  last build: {last['files']} files under {last['images_root']}, "
            f"{last['added']} added, {last['updated']} updated, {last['removed']} removed, "
            f"{last['skipped']} skipped ({last['runner']} runner, {last['seconds']:.1f} s)"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """Runs ``index build|search|info``; returns the exit status."""
    action = {"build": _build, "search": _search, "info": _info}[args.index_action]
    return action(args)
