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
        "match); any index.backend",
    )


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    """Adds the ``index`` verb (with ``build``, ``search``, ``info``) to CLI sub-parsers."""
    index = verbs.add_parser(
        "index", help="archive index (index.backend: milvus or memory): build, search, info"
    )
    actions = index.add_subparsers(dest="index_action", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="encode new/changed images, drop deleted ones")
    build.add_argument("--images", metavar="DIR", help="archive folder")
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


def _last_root(uri: str, workdir: Path) -> str | None:
    from hpsh_tf2.index.build import status_path

    status = status_path(uri, workdir)
    if not status.is_file():
        return None
    return json.loads(status.read_text(encoding="utf-8")).get("images_root")


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
        root = args.image_root or _last_root(uri, config.workdir)
        save_query_grid(args.out, args.image[0], results[0], image_root=root)
        print(f"wrote {args.out}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from hpsh_tf2.index.build import build_index

    config, uri, collection = resolve(args)
    if bool(args.images) == bool(args.scenes):
        from hpsh_tf2.errors import UsageError

        raise UsageError("Received: index build; expected exactly one of --images, --scenes PATH")
    if args.scenes:
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
    print(f"  classes ({len(info['classes'])}): {classes}")
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
