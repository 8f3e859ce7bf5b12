"""Command line of the data tools: `yoloseg check`, `yoloseg split`, `yoloseg convert yolo2coco|masks`.

Their settings are ``key=value`` words of their own (not training settings), checked here: an unknown key is
refused with a suggestion, a bad value names the key. Errors print one line, like every yoloseg command.
"""

from __future__ import annotations

import difflib

import click


def _clean_errors():
    from yoloseg.cli import _clean_errors as clean

    return clean()


@click.command("yolo2coco", short_help="YOLO-seg labels of a split -> COCO instances JSON.")
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="data=DATA.yaml [split=val]")
@click.option("-o", "--out", default=None, metavar="JSON",
              help="Output file. Default: instances_<split>.json in the current folder.")
def convert_yolo2coco_cmd(words, out):
    """Write one split of a YOLO-seg data set as a COCO instances JSON: polygons in pixels, area from the
    polygon, bbox, category ids = class index + 1 with the names of the data YAML.

    \b
    Examples:
      yoloseg convert yolo2coco data=data.yaml split=val -o instances_val.json
    """
    kv = _tool_args(words, {"data": str, "split": str, "workers": int}, required=("data",))
    with _clean_errors():
        from yoloseg.data.coco_export import yolo_to_coco

        res = yolo_to_coco(kv["data"], kv.get("split", "val"), out, workers=kv.get("workers"))
    click.echo(f"wrote {res.json_file}")


@click.command("masks", short_help="PNG instance-id or class-id masks -> YOLO-seg labels.")
@click.argument("masks_dir", metavar="MASKS_DIR")
@click.option("-o", "--out", required=True, metavar="DIR", help="Labels folder: one DIR/<name>.txt per mask.")
@click.option("--mode", type=click.Choice(["instance", "class"]), default="instance", show_default=True,
              help="instance: one value per instance; class: the value is the class, one instance per "
                   "connected component.")
@click.option("--classes", "class_map", default=None, metavar="FILE",
              help="instance mode: JSON/YAML {instance_id: class} or {image_stem: {instance_id: class}}.")
@click.option("--class-masks", default=None, metavar="DIR",
              help="instance mode: folder of class-id images with the same names as the masks.")
@click.option("--offset", default=1, show_default=True, help="class = pixel value - offset in class-id images.")
@click.option("--ignore", default=255, show_default=True, help="void value of class-id images (skipped).")
def convert_masks_cmd(masks_dir, out, mode, class_map, class_masks, offset, ignore):
    """Trace mask images (0 = background) into YOLO-seg polygons with the compiled contour tracer; holes
    and separate parts are linked into one polygon per instance. A mask that cannot be used is reported
    and skipped.

    \b
    Examples:
      yoloseg convert masks masks/ -o labels/train --classes classes.json
      yoloseg convert masks masks/ -o labels/train --class-masks class_masks/
      yoloseg convert masks semantic/ -o labels/train --mode class
    """
    with _clean_errors():
        from yoloseg.data.masks import masks_to_yolo

        res = masks_to_yolo(masks_dir, out, mode, class_map, class_masks, offset=offset, ignore=ignore)
    click.echo(f"wrote {res.n_written} label files to {res.out_dir}")


# ---------------------------------------------------------------------------------------------- data tools
def _bool(key: str, v: str) -> bool:
    t = v.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off", ""):
        return False
    raise click.UsageError(f"{key}={v}: expected true or false")


def _tool_args(words, keys: dict, required=()) -> dict:
    """key=value words of a data tool, typed by ``keys``; unknown keys are refused with a suggestion."""
    out = {}
    for w in words:
        k, eq, v = w.partition("=")
        if not eq:
            raise click.UsageError(f"'{w}': expected key=value (keys: {', '.join(keys)})")
        k = k.strip()
        if k not in keys:
            close = difflib.get_close_matches(k, list(keys), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; keys: {', '.join(keys)}"
            raise click.UsageError(f"unknown key '{k}'{hint}")
        typ = keys[k]
        try:
            out[k] = _bool(k, v) if typ is bool else typ(v) if v.strip().lower() not in ("", "none") else None
        except ValueError:
            raise click.UsageError(f"{k}={v}: expected {typ.__name__}") from None
    for k in required:
        if out.get(k) is None:
            raise click.UsageError(f"missing {k}=...")
    return out


@click.command("check", short_help="Check a data set's images and labels; plots and fixes on request.",
             context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="data=DATA.yaml [plots=false] [fix=false]")
def check_cmd(words):
    """Run the label scan that training runs on every split of a data YAML and print, per split, images,
    instances per class, empty and duplicate images, degenerate polygons and polygons outside the image;
    then every problem per file with its fix. Exits with 1 when a split is unusable.

    \b
    Keys:
      data=FILE      the data YAML (required)
      plots=true     write overlays.jpg (sample images with their polygons) and labels.jpg (label
                     statistics) into the run folder (project/name, numbered)
      fix=true       rewrite fixable label files (clip, drop repeated lines and degenerate polygons)
                     atomically, keeping each original as <file>.bak
      limit=N        list at most N problems per split (default, or 0: all)
      project=DIR, name=NAME, save_dir=DIR   where plots go (default runs/check/check)
      workers=N      threads reading the files
    """
    kv = _tool_args(words, {"data": str, "plots": bool, "fix": bool, "limit": int, "project": str, "name": str,
                            "save_dir": str, "workers": int}, required=("data",))
    with _clean_errors():
        from yoloseg.data.check import check_dataset, format_report

        res = check_dataset(kv["data"], plots=kv.get("plots", False), fix=kv.get("fix", False),
                            save_dir=kv.get("save_dir"), project=kv.get("project") or "runs/check",
                            name=kv.get("name") or "check", workers=kv.get("workers"))
    click.echo(format_report(res, kv.get("limit") or None))
    if not res.ok:
        bad = ", ".join(s for s, r in res.splits.items() if r.unusable)
        click.echo(f"unusable split(s): {bad}", err=True)
        click.get_current_context().exit(1)


@click.command("split", short_help="Split a folder of labelled images into train and val (stratified).",
             context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="data=IMAGES_DIR [val=0.2] [seed=0] [move=false]")
def split_cmd(words):
    """Split the images of a folder into train and val, stratified by class so that every class with two
    or more images appears in both, and write a data.yaml beside the images folder.

    \b
    Keys:
      data=DIR     the images folder (labels found the usual way: images/ -> labels/)
      val=0.2      fraction of the images for val
      seed=0       seed of the split
      move=false   false: write train.txt and val.txt lists; true: move images and labels into
                   images/{train,val} and labels/{train,val}
      workers=N    threads reading the files
    """
    kv = _tool_args(words, {"data": str, "val": float, "seed": int, "move": bool, "workers": int},
                    required=("data",))
    with _clean_errors():
        from yoloseg.data.split import split_dataset

        res = split_dataset(kv["data"], val=kv.get("val", 0.2), seed=kv.get("seed", 0),
                            move=kv.get("move", False), workers=kv.get("workers"))
    click.echo(f"data: {res.yaml_file}  (yoloseg train data={res.yaml_file})")


def register(cli: click.Group, convert_group: click.Group) -> None:
    convert_group.add_command(convert_yolo2coco_cmd, "yolo2coco")
    convert_group.add_command(convert_masks_cmd, "masks")
    cli.add_command(check_cmd, "check")
    cli.add_command(split_cmd, "split")
