"""Command line: `yoloseg [task] train|val|predict|export key=value ...`, `yoloseg info`, `yoloseg plugins`,
`yoloseg convert coco|yolo2coco|masks ...` (annotation formats), `yoloseg check data=...` (label report,
plots, fixes) and `yoloseg split data=IMAGES` (train/val split).

Every `key=value` is checked against the settings schema (yoloseg/cfg/schema.py) before any work starts;
`yoloseg <mode> --help` lists every key with its default and meaning. Errors print one line, no traceback
(set YOLOSEG_DEBUG=1 to see the traceback of an unexpected error).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys

import click

from yoloseg import __version__

MODES = ("train", "val", "predict", "export")
_TASK_META = "yoloseg.task"

_MODE_HELP = {
    "train": "Train a model. With no arguments: yolo11n-seg from scratch on the built-in synthetic-shapes data.",
    "val": "Evaluate a model on a data split: COCO box and mask mAP.",
    "predict": "Predict on images, folders, globs or videos (source=...) and save annotated outputs.",
    "export": "Export a model to ONNX or TorchScript (format=...).",
    "info": "Print a model summary: layers, parameters, gradients, GFLOPs.",
}
_SHORT_HELP = {
    "train": "Train a model.",
    "val": "Evaluate a model (COCO box and mask mAP).",
    "predict": "Predict on images, folders, globs or videos.",
    "export": "Export a model to ONNX or TorchScript.",
}
_EXAMPLES = """\b
Examples:
  yoloseg train                                    # built-in data set, yolo11n-seg
  yoloseg train data=my.yaml model=yolo11s-seg.yaml epochs=50 imgsz=640
  yoloseg predict model=runs/segment/train/weights/best.pt source=images/
  yoloseg val model=best.pt data=my.yaml
  yoloseg export model=best.pt format=onnx dynamic=true
  yoloseg segment info model=yolo11s-seg.yaml      # the task word is optional
  yoloseg plugins                                  # installed tasks and their distributions
  yoloseg convert coco instances_val2017.json --out coco-seg   # COCO JSON -> labels + data.yaml
  yoloseg check data=my.yaml plots=true             # label problems per file, overlays, labels.jpg
  yoloseg split data=my-set/images val=0.2          # train.txt/val.txt and data.yaml, stratified
"""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextlib.contextmanager
def _clean_errors():
    """Turn errors into one-line click messages; keep tracebacks for YOLOSEG_DEBUG=1."""
    from yoloseg.cfg import CfgError

    try:
        yield
    except click.ClickException:
        raise
    except CfgError as e:
        raise click.UsageError(_one_line(e)) from None
    except (KeyboardInterrupt, click.exceptions.Exit, click.Abort):
        raise
    except Exception as e:
        if os.environ.get("YOLOSEG_DEBUG", "").strip() not in ("", "0"):
            raise
        known = (ValueError, FileNotFoundError, ImportError, NotImplementedError, OSError, TypeError)
        msg = _one_line(e) if isinstance(e, known) else f"{type(e).__name__}: {_one_line(e)}"
        raise click.ClickException(msg or type(e).__name__) from None


# ---------------------------------------------------------------------------------------------- help
def _settings_help(formatter: click.HelpFormatter, mode: str, task=None) -> None:
    from yoloseg.cfg.schema import MODE_DEFAULTS, MODE_SECTIONS, SCHEMA, SECTIONS

    first = MODE_SECTIONS.get(mode, ())
    order = list(first) + [s for s in SECTIONS if s not in first]
    mode_defaults = MODE_DEFAULTS.get(mode, {})
    for section in order:
        rows = []
        for s in SCHEMA.values():
            if s.section != section or s.key == "mode":
                continue
            default = mode_defaults.get(s.key, s.default)
            shown = "" if default is None else (str(default).lower() if isinstance(default, bool) else str(default))
            rows.append((f"{s.key}={shown}", f"{s.help} [{s.describe()}]"))
        title = SECTIONS[section] + ("" if section in first else " (not used by this mode)")
        with formatter.section(title):
            formatter.write_dl(rows, col_max=28)
    if task is not None and task.settings:
        rows = []
        for s in task.settings:
            shown = "" if s.default is None else (str(s.default).lower() if isinstance(s.default, bool) else str(s.default))
            rows.append((f"{s.key}={shown}", f"{s.help} [{s.describe()}]"))
        with formatter.section(f"Settings of the {task.name} task"):
            formatter.write_dl(rows, col_max=28)


class _ModeCommand(click.Command):
    """A mode command; its help lists every setting from the schema."""

    def __init__(self, *args, mode: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.mode = mode

    def format_epilog(self, ctx, formatter):
        formatter.write_paragraph()
        formatter.write_text("Settings are given as key=value (lists as imgsz=[480,640] or imgsz=480,640; "
                             "empty as key= or key=none). Defaults shown for this mode:")
        task = None
        task_word = ctx.find_root().meta.get(_TASK_META)
        if task_word is not None:
            from yoloseg.tasks import get_task

            with contextlib.suppress(Exception):
                task = get_task(task_word)
        _settings_help(formatter, self.mode, task)


class _TaskGroup(click.Group):
    """A group whose first word may be a task name: `yoloseg segment train ...` == `yoloseg train ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-") and "=" not in args[0]:
            from yoloseg.tasks.registry import task_names

            if args[0] in task_names():
                ctx.meta[_TASK_META] = args[0]
                args = args[1:]
                if not args:
                    args = ["--help"]
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and name not in self.commands and not name.startswith("-"):
            from yoloseg.tasks.registry import task_names

            if "=" in name:
                raise click.UsageError(f"missing mode before '{name}': use yoloseg [task] "
                                       f"{'|'.join(MODES)} key=value ...")
            known = list(self.commands) + task_names()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; choose from {', '.join(self.commands)}"
            raise click.UsageError(f"unknown command '{name}'{hint}")
        return super().resolve_command(ctx, args)


@click.group(cls=_TaskGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EXAMPLES,
             subcommand_metavar="[TASK] MODE [KEY=VALUE]...")
@click.version_option(__version__, "-V", "--version", prog_name="yoloseg")
def cli():
    """yoloseg: YOLO11-seg instance segmentation.

    \b
    Usage: yoloseg [TASK] MODE key=value ...
    TASK is optional (segment is built in; see `yoloseg plugins`), MODE is one of train, val, predict,
    export, info. `yoloseg MODE --help` lists every setting with its default and meaning.
    """


# ---------------------------------------------------------------------------------------------- modes
def _overrides(ctx: click.Context, words, mode: str, unknown: dict | None = None) -> dict:
    from yoloseg.cfg import CfgError, parse_cli_args

    over = parse_cli_args(words, unknown)
    if "mode" in over and str(over["mode"]).strip().lower() != mode:
        raise CfgError(f"mode={over['mode']} conflicts with the command '{mode}'; drop mode=")
    over.pop("mode", None)
    task_word = ctx.find_root().meta.get(_TASK_META)
    if task_word is not None:
        if "task" in over and over["task"] != task_word:
            raise CfgError(f"task={over['task']} conflicts with the task word '{task_word}'")
        over["task"] = task_word
    return over


def _prepare(ctx, words, mode):
    """Validate the overrides once.

    Returns (validated cfg, task name or None when the user named none, the user-given keys with their
    validated values). Without a task word or task=, the model decides (checkpoint metadata, config name).
    """
    from yoloseg.cfg import check_key, get_cfg
    from yoloseg.tasks import get_task

    unknown: dict = {}  # keys that are not yoloseg settings: a task's own, checked once the task is known
    over = _overrides(ctx, words, mode, unknown)
    cfg = get_cfg({**over, "mode": mode})
    task = get_task(cfg.task) if "task" in over else None
    if unknown:
        if task is not None:  # named task: its settings are checked now, before any work
            cfg = get_cfg({**over, **unknown, "mode": mode}, extra=task.settings)
        else:
            declared = {s.key for t in _loaded_tasks() for s in t.settings}
            for k in unknown:
                if k not in declared:
                    check_key(k)  # no installed task declares it: the usual unknown-key error, now
    if task is not None and "model" not in over and task.default_model:
        cfg.model = task.default_model
    given = {k: getattr(cfg, k) for k in over if k not in ("model", "task")}
    given.update({k: getattr(cfg, k, v) for k, v in unknown.items()})  # else checked by the model's task
    return cfg, (task.name if task else None), given


def _loaded_tasks() -> list:
    """Every installed task (plugins load here: only when a word is not a yoloseg setting)."""
    from yoloseg.tasks import get_task
    from yoloseg.tasks.registry import task_names

    out = []
    for name in task_names():
        try:
            out.append(get_task(name))
        except Exception:  # a broken plugin is reported by the registry; it declares nothing here
            continue
    return out


def _run(ctx: click.Context, mode: str, words) -> None:
    with _clean_errors():
        cfg, task, given = _prepare(ctx, words, mode)
        if mode == "predict":
            if cfg.source is None:
                raise click.UsageError("predict needs source=IMAGE|FOLDER|GLOB|VIDEO (e.g. source=images/)")
            given.setdefault("save", True)  # the command line saves annotated outputs unless save=false
        from yoloseg.engine.model import YOLO

        model = YOLO(cfg.model, task=task)
        if mode == "train":
            model.train(**given)
        elif mode == "val":
            model.val(**given)
        elif mode == "predict":
            given.pop("stream", None)
            for _ in model.predict(stream=True, **given):  # stream: memory stays bounded on long videos
                pass
        elif mode == "export":
            path = model.export(**given)
            click.echo(f"exported: {path}")


def _make_mode_command(mode: str) -> click.Command:
    def callback(words):
        _run(click.get_current_context(), mode, words)

    return _ModeCommand(
        name=mode,
        mode=mode,
        callback=callback,
        params=[click.Argument(["words"], nargs=-1, type=click.UNPROCESSED, metavar="[KEY=VALUE]...")],
        help=_MODE_HELP[mode] + "\n\nUsage: yoloseg [TASK] " + mode + " key=value ...",
        context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
        short_help=_SHORT_HELP[mode],
    )


for _mode in MODES:
    cli.add_command(_make_mode_command(_mode))


@cli.command(
    "info",
    cls=_ModeCommand,
    mode="info",
    help=_MODE_HELP["info"] + "\n\nUsage: yoloseg [TASK] info model=yolo11s-seg.yaml [imgsz=640]",
    short_help="Print a model summary.",
    context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
)
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="[KEY=VALUE]...")
@click.pass_context
def info_cmd(ctx, words):
    with _clean_errors():
        cfg, task, _ = _prepare(ctx, words, "info")
        from yoloseg.engine.model import YOLO

        imgsz = cfg.imgsz if isinstance(cfg.imgsz, int) else max(cfg.imgsz)
        YOLO(cfg.model, task=task).info(imgsz=imgsz, verbose=True)


@cli.command("plugins", short_help="List installed tasks and the distribution providing each.")
def plugins_cmd():
    """List the tasks published through the `yoloseg.tasks` entry point group: name, distribution, status.

    Every enabled task is loaded so that broken plugins show up as failed.
    Set YOLOSEG_DISABLE_PLUGIN_AUTOLOAD=1 to skip tasks from other distributions.
    """
    import warnings

    from yoloseg.tasks.registry import default_registry

    with _clean_errors(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # failures appear in the table instead
        reg = default_registry()
        listing = reg.list(load=True)
        entries = reg.entries()
    rows = [("TASK", "DISTRIBUTION", "STATUS", "DESCRIPTION")]
    for name, (dist, status) in listing.items():
        task = entries[name].task
        rows.append((name, dist, status, task.description if task else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + ("  " + r[3] if r[3] else ""))


# ---------------------------------------------------------------------------------------------- convert
@cli.group("convert", short_help="Convert annotations: COCO JSON, mask images <-> YOLO-seg labels.")
def convert_group():
    """Convert annotations between formats: COCO JSON and mask images into YOLO-seg label files, and YOLO-seg
    labels into COCO JSON."""


@convert_group.command("coco", short_help="COCO instances JSON -> YOLO-seg labels and data.yaml.")
@click.argument("json_files", nargs=-1, required=True, metavar="INSTANCES_JSON...")
@click.option("-o", "--out", required=True, metavar="DIR",
              help="Data set root: writes DIR/labels/<split>/*.txt and DIR/data.yaml (updated when it exists).")
@click.option("--split", default=None, metavar="NAME",
              help="Split folder name (one JSON only). Default: the JSON name without 'instances_' "
                   "(instances_val2017.json -> val2017).")
@click.option("--classes", type=click.Choice(["sorted", "coco80"]), default="sorted", show_default=True,
              help="sorted: indices 0.. in sorted category id order; coco80: the 80-class index of the "
                   "original COCO category ids.")
@click.option("--include-crowd", is_flag=True, help="Convert iscrowd=1 annotations too (default: skipped).")
@click.option("--copy-images", is_flag=True, help="Copy the images into DIR/images/<split>/.")
@click.option("--link-images", is_flag=True, help="Symlink the images into DIR/images/<split>/.")
@click.option("--images", "images_dir", default=None, metavar="IMG_DIR",
              help="Where the JSON's images are (with --copy-images/--link-images; one JSON only). "
                   "Default: ../images/<split> or ../<split> beside the JSON's folder.")
@click.option("--overwrite", is_flag=True, help="Replace the files of an existing labels folder.")
def convert_coco_cmd(json_files, out, split, classes, include_crowd, copy_images, link_images, images_dir,
                     overwrite):
    """Write one YOLO-seg label file per image of each COCO instances JSON (an empty file for an image
    without annotations) and a data.yaml with the class names of its categories.

    \b
    Multi-part polygons are joined into one polygon; RLE masks are traced. Annotations that cannot be used
    (unknown image/category, < 3 points, zero area, bad RLE) are skipped with a warning and counted.
    Without --copy-images/--link-images, put the images in DIR/images/<split>/ yourself.

    \b
    Examples:
      yoloseg convert coco annotations/instances_train2017.json annotations/instances_val2017.json --out coco-seg
      yoloseg convert coco instances_val.json --out my-set --split val --link-images --images photos/
    """
    from pathlib import Path

    if copy_images and link_images:
        raise click.UsageError("choose one of --copy-images and --link-images")
    images = "copy" if copy_images else "link" if link_images else None
    if images_dir is not None and images is None:
        raise click.UsageError("--images is used with --copy-images or --link-images")
    if len(json_files) > 1 and (split is not None or images_dir is not None):
        raise click.UsageError("--split and --images need a single INSTANCES_JSON")
    with _clean_errors():
        from yoloseg.data.convert import coco_to_yolo

        results = [coco_to_yolo(f, out, split, classes=classes, include_crowd=include_crowd, images=images,
                                images_dir=images_dir, overwrite=overwrite) for f in json_files]
    for r in results:
        img_dir = Path(out).expanduser().resolve() / "images" / r.split
        if not img_dir.is_dir():
            click.echo(f"note: put the images of {Path(r.json_file).name} in {img_dir}/ "
                       f"(or rerun with --link-images / --copy-images)", err=True)
    if results and results[-1].yaml_file:
        click.echo(f"data: {results[-1].yaml_file}  (yoloseg train data={results[-1].yaml_file})")


from yoloseg import cli_data  # noqa: E402  (commands of the data tools, registered on the groups above)

cli_data.register(cli, convert_group)


def main(argv=None) -> None:
    """Console entry point (`yoloseg`)."""
    cli.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="yoloseg")


if __name__ == "__main__":
    main()
