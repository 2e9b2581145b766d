"""Command-line interface: ``python cli.py VERB`` or the ``hpsh`` console script.

Verbs: download, prepare, extract, train, evaluate, export, query, run, demo. Every verb takes
``--config FILE`` and repeatable ``--set dotted.key=value`` overrides; each is a thin wrapper
over :mod:`hpsh_tf2.workflow` (everything here is callable from Python).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

# The package is imported inside the verb functions on purpose: `hpsh --help` and argument
# errors then answer without importing TensorFlow (several seconds). Only the index verbs'
# argument definitions are imported here; that module imports nothing heavy at its top.
from hpsh_tf2 import __version__
from hpsh_tf2.config import add_config_arguments
from hpsh_tf2.index import commands as index_commands
from hpsh_tf2.xla import prefer_wide_vectors

__all__ = ["build_parser", "main"]


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Received: {text!r}; expected comma-separated integers, e.g. 16,32,64"
        ) from None


def _str_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all verbs."""
    parser = argparse.ArgumentParser(
        prog="hpsh", description="HPSH deep hashing for remote-sensing image retrieval."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    parser.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE before the config is read, so that the samplers, search or index "
        "backends, strategies and backbones it registers are valid config values (repeatable; "
        "installed plugins of the 'hpsh_tf2.plugins' entry-point group load by themselves)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    download = verbs.add_parser(
        "download", help="download and extract a dataset (ucmd, ucmd_multilabel, bigearthnet)"
    )
    download.add_argument(
        "name",
        help="dataset name: ucmd, ucmd_multilabel (the 17-label table; needs --checksum), "
        "bigearthnet (BigEarthNet-S2 v1.0, about 66 GB)",
    )
    download.add_argument(
        "--dest",
        help="folder to extract into (default: derived from the config's data.root, e.g. "
        "data for data/UCMerced_LandUse/Images)",
    )
    download.add_argument("--url", help="alternative URL (a mirror)")
    download.add_argument("--checksum", help="expected checksum (md5:HEX or sha256:HEX)")
    add_config_arguments(download)

    for name, text in (
        ("prepare", "scan the dataset, make the seeded split, print a per-class table"),
        ("extract", "compute (cached, resumable) backbone features of the split"),
        ("train", "train the hash model (train.mode: features or end_to_end)"),
        ("evaluate", "retrieval evaluation: report.json, codes.npz, figures"),
        ("export", "export a SavedModel for TF Serving"),
        ("run", "prepare, extract, train, evaluate and export, skipping up-to-date steps"),
    ):
        verb = verbs.add_parser(name, help=text)
        add_config_arguments(verb)
        if name == "evaluate":
            verb.add_argument(
                "--saved-model",
                metavar="DIR",
                help="evaluate an exported SavedModel (model or version folder) instead",
            )

    table = verbs.add_parser(
        "table", help="results table: bits x methods x split seeds (features mode), resumable"
    )
    table.add_argument(
        "--bits", type=_int_list, default=None, help="code lengths (default 16,32,64)"
    )
    table.add_argument(
        "--methods",
        type=_str_list,
        default=None,
        help="methods (default hpsh,random,semihard): a sampler mode = the HPSH loss with that "
        "sampler; a loss name (dpsh, dsh, hashnet, dch, csq, greedyhash, dtsh) = that loss "
        "with its preset",
    )
    table.add_argument(
        "--samplers",
        type=_str_list,
        default=None,
        help="deprecated: sampler.mode values trained with the config's loss (use --methods)",
    )
    table.add_argument(
        "--seeds",
        type=_int_list,
        default=None,
        help="split seeds (default: data.seed, data.seed+1, data.seed+2)",
    )
    add_config_arguments(table)

    query = verbs.add_parser("query", help="nearest neighbours of an image via a SavedModel")
    query.add_argument(
        "--model",
        help="export/<name> or a version folder (default: <output.workdir>/export/<name> of the "
        "config)",
    )
    query.add_argument("--image", required=True, action="append", help="query image (repeatable)")
    query.add_argument("--top", type=int, default=10, help="neighbours to return (default 10)")
    query.add_argument("--out", help="save a retrieval grid PNG here")
    query.add_argument(
        "--image-root",
        help="dataset root, to draw the neighbours in the grid (default: the config's data.root)",
    )
    add_config_arguments(query)
    index_commands.add_query_options(query)  # issue 13: query --index

    demo = verbs.add_parser("demo", help="run everything on the embedded synthetic dataset")
    demo.add_argument("--workdir", default="runs/demo", help="output folder (default runs/demo)")
    add_config_arguments(demo)
    index_commands.add_parser(verbs)  # issue 13: the index verb
    return parser


def _load_plugins(modules: Sequence[str]) -> None:
    """Installed plugins (entry points), then ``--plugin`` modules: before any config is read."""
    from hpsh_tf2.registry import load_entry_point_plugins, load_plugins

    load_entry_point_plugins()
    load_plugins(list(modules))


def _load(args) -> object:
    from hpsh_tf2.config import load_config

    return load_config(args.config, args.overrides)


def _run_verb(args) -> int:
    from hpsh_tf2 import workflow
    from hpsh_tf2.layout import RunLayout

    if args.verb == "download":
        return _download(args)
    if args.verb == "query":
        return _query(args)
    if args.verb == "index":
        from hpsh_tf2.index.commands import run as run_index  # issue 13

        return run_index(args)
    if args.verb == "demo":
        workflow.demo(args.workdir, args.overrides, base=args.config)
        return 0
    config = _load(args)
    if args.verb == "prepare":
        workflow.prepare(config)
    elif args.verb == "extract":
        features = workflow.extract(config)
        shapes = ", ".join(f"{k}={v.shape}" for k, v in features.items())
        print(f"features in {RunLayout(config.workdir).features_dir}: {shapes}")
    elif args.verb == "train":
        result = workflow.train(config)
        print(
            f"model: {result.hash_model_path} (epoch {result.selected_epoch}, {result.selection})"
        )
    elif args.verb == "evaluate":
        workflow.evaluate(config, saved_model=args.saved_model)
    elif args.verb == "export":
        workflow.export(config)
    elif args.verb == "run":
        workflow.run(config)
    elif args.verb == "table":
        from hpsh_tf2.table import DEFAULT_BITS, results_table

        results_table(
            config,
            bits=args.bits or DEFAULT_BITS,
            methods=args.methods,
            samplers=args.samplers,
            seeds=args.seeds,
        )
    return 0


def _download(args) -> int:
    from pathlib import PurePosixPath

    from hpsh_tf2.data.download import DATASETS, download_dataset

    dest = args.dest
    if dest is None:
        root = _load(args).data.root if (args.config or args.overrides) else None
        source = DATASETS.get(args.name)
        suffix = PurePosixPath(source.extracted_root).parts if source else ()
        parts = PurePosixPath(root).parts if root else ()
        if not root or not suffix or parts[-len(suffix) :] != suffix:
            from hpsh_tf2.errors import UsageError

            raise UsageError(
                "download: pass --dest DIR, or a config whose data.root ends with the "
                f"dataset's image folder ({'/'.join(suffix) or 'unknown dataset'}). "
                f"Received: data.root={root!r}"
            )
        dest = str(PurePosixPath(*parts[: -len(suffix)])) if len(parts) > len(suffix) else "."
    root = download_dataset(args.name, dest, url=args.url, checksum=args.checksum)
    print(f"images at {root}\nuse: --set data.root={root}")
    return 0


def _query(args) -> int:
    from hpsh_tf2.errors import UsageError
    from hpsh_tf2.layout import RunLayout
    from hpsh_tf2.serving import format_neighbours, query_images, save_query_grid

    if args.top <= 0:
        raise UsageError(f"Received: --top={args.top}; expected a positive integer")
    if args.index:  # issue 13: the archive index instead of the SavedModel's database
        return index_commands.run_query(args)
    if args.model is None or (args.out and args.image_root is None):
        config = _load(args) if (args.config or args.overrides) else None
        if args.model is None:
            if config is None:
                raise UsageError("query: pass --model DIR, or --config FILE to use its export")
            layout = RunLayout(config.workdir)
            args.model = str(layout.export_model(config.export.name or config.name))
        if args.image_root is None and config is not None:
            args.image_root = config.data.root
    from hpsh_tf2.evaluation.code_health import tie_note

    results = query_images(args.model, args.image, top=args.top)
    for image, neighbours in zip(args.image, results):
        print(f"query: {image}")
        print(format_neighbours(neighbours))
        note = tie_note([n.distance for n in neighbours])
        if note:
            print(note)
    if args.out:
        save_query_grid(args.out, args.image[0], results[0], image_root=args.image_root)
        print(f"wrote {args.out}")
    return 0


def _tensorflow_error_line(err: Exception) -> str | None:
    """One line saying why a TensorFlow runtime error happened, or None for other errors.

    A graph error's message is a header, the Python stack where the failing op was defined and
    then the op's own message; the last is kept, without its ``[Op:...]`` suffix. TensorFlow is
    only consulted when it is already imported (the CLI imports it lazily).
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(err, tf.errors.OpError):
        return None
    headers = ("Graph execution error", "Detected at node")
    lines = [
        line.strip()
        for line in err.message.splitlines()
        if line.strip() and not line[0].isspace() and not line.startswith(headers)
    ]
    reason = re.sub(r"\s*\[Op:[^\]]*\]$", "", lines[-1]) if lines else err.message.strip()
    return f"{type(err).__name__}: {reason}"


def _interrupted_line(args) -> str:
    """What a Ctrl-C kept, and how to go on (one line)."""
    try:
        from hpsh_tf2.layout import RunLayout

        if args.verb in ("download", "query"):
            layout = None
        elif args.verb == "demo":
            layout = RunLayout(args.workdir)
        else:
            layout = RunLayout(_load(args).workdir)
    except Exception:  # the config itself may be what was being loaded
        layout = None
    if layout is None:
        return f"interrupted: {args.verb} stopped; nothing was written"
    checkpoints = sorted(layout.checkpoints.glob("ckpt-*.index"))
    epochs = max((int(p.stem.split("-")[1]) for p in checkpoints), default=0)
    kept = f"{epochs} finished epoch(s) in {layout.checkpoints}" if epochs else "finished steps"
    return (
        f"interrupted: {args.verb} stopped; kept {kept} (every output is written whole or not "
        "at all); run the same command again to resume"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status.

    0: done. 2: bad input (any :class:`~hpsh_tf2.errors.HPSHError`, e.g. a config key, a data
    file, a busy workdir, a diverged run) or an ``OSError``, in one line. 1: a TensorFlow
    runtime error, in one line. 130: interrupted (Ctrl-C), in one line. Any other exception is a
    bug and shows its traceback (exit 1).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    prefer_wide_vectors()  # before any XLA compilation (search, evaluation): see hpsh_tf2.xla
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # TF's SavedModel writer logs every renamed capture at INFO level through absl.
        for name in ("absl", "tensorflow"):
            logging.getLogger(name).setLevel(logging.WARNING)
    from hpsh_tf2.errors import HPSHError

    try:
        _load_plugins([*args.plugins, *getattr(args, "verb_plugins", [])])
        return _run_verb(args)
    except KeyboardInterrupt:
        if args.verbose:
            raise
        print(_interrupted_line(args), file=sys.stderr)
        return 130
    except (HPSHError, OSError) as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        line = _tensorflow_error_line(err)
        if line is None or args.verbose:
            raise
        print(
            f"error: {args.verb} stopped: {line} (--verbose shows the traceback)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
