"""The ``matcv`` command line: ``matcv bench``, ``matcv data``, ``matcv leaderboard``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matcv.benchmarks.user_data import adapted_task
from matcv.datamodules.core.config import ConfigError, TaskConfig, available_tasks, check_train_fractions, named_datasets

EPILOG = """examples:
  matcv bench --task segmentation                      quick profile on the built-in synthetic panels
  matcv bench --task segmentation --profile paper      Yin 2024's protocol (512 px, 10 folds; use a GPU)
  matcv bench --task segmentation --data-root ~/panels your photos: ~/panels/manifest.csv with
                                                       image_path,mask_path,rating,panel_id
  matcv bench --task segmentation --data superalloy    the NASA superalloy micrographs (real data; grouped CV,
                                                       official split and out-of-distribution test)
  matcv data --task segmentation                       generate the built-in data and print where it is
  matcv data --check ~/panels                          validate your own data root, image by image
  matcv leaderboard                                    rebuild every leaderboard table from runs/
  matcv verify                                         rescore every run's kept test predictions, compare
  matcv predict --task rating --checkpoint runs/rating/.../best.ckpt PHOTOS_DIR   rate new photos (CSV)
  matcv generate --checkpoint runs/alloygan/.../best.ckpt --si 7 --fe 0.5 --cu 0.25 --mn 0.35 --mg 0.3 --ni 0 \
      --cooling-rate 10 --modified                     Al-Si micrographs for a composition (PNGs)
"""


def _int_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values:  # "--folds ," would otherwise mean "no fold at all" (or, before, every fold)
        raise argparse.ArgumentTypeError(f"no fold number in {text!r}; give e.g. 0,2 or leave the option out")
    return values


def _str_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values:  # an empty list must not silently mean "all models"
        raise argparse.ArgumentTypeError(f"no model name in {text!r}; give e.g. unet,fpn or leave the option out")
    return values


def _fraction_list(text: str) -> list[float]:
    """``--train-fraction 0.25,0.5,1``: fractions in (0, 1], each named once."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}; give e.g. 0.25,0.5,1") from None
    try:
        return check_train_fractions(values, "--train-fraction")
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (0 devices or -1 parallel runs never mean anything)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {value}")
        return value
    parse.__name__ = f"whole number >= {minimum}"
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matcv", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Benchmark deep-learning models on small materials-science image datasets with "
                    "specimen-grouped cross-validation, and build leaderboards you can trust.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser(
        "bench", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        help="train and test every configured model on every grouped fold, then write the leaderboard",
        description="Train and test every model of a task on every grouped fold. Re-running resumes: finished "
                    "runs are skipped, a run that was killed or interrupted is redone, failed runs are recorded and "
                    "skipped (unless they failed because of the options or the machine: those are retried).")
    bench.add_argument("--task", default="segmentation",
                       help=f"task name ({', '.join(available_tasks())}) or a path to a task YAML (default: segmentation)")
    bench.add_argument("--profile", default="quick", help="profile in the task YAML: quick (CPU) or paper (GPU); default quick")
    bench.add_argument("--data", default=None, metavar="NAME_OR_FOLDER",
                       help="a named real dataset of the task (e.g. superalloy for segmentation: its YAML is "
                            "<task>-<name>.yaml) or a data folder (same as --data-root)")
    bench.add_argument("--data-root", type=Path, default=None,
                       help="folder with manifest.csv and your images (or a named dataset's copy); "
                            "default: the built-in synthetic data")
    # A user's data: the input size (else dataset.yaml's, else the profile's); see matcv.benchmarks.user_data.
    bench.add_argument("--image-size", type=_count(32), default=None, metavar="PX",
                       help="resize every image to PX x PX (a multiple of 32) for training and test")
    bench.add_argument("--crop-size", type=_count(32), default=None, metavar="PX",
                       help="train on random PX x PX crops at native resolution (a multiple of 32); whole images "
                            "are tested, in tiles of PX when larger")
    bench.add_argument("--models", type=_str_list, default=None, help="comma-separated subset of models (default: all)")
    bench.add_argument("--folds", type=_int_list, default=None, help="comma-separated fold numbers (default: all)")
    bench.add_argument("--seeds", type=_count(1), default=None, metavar="N",
                       help="train every model x fold N times with N training seeds on the same folds (default: the "
                            "profile's 'seeds', else 1); seed 1 is the single-seed run, so raising N later runs only "
                            "the new seeds")
    bench.add_argument("--train-fraction", type=_fraction_list, default=None, metavar="F,F,...",
                       help="a learning curve: also train every model x fold (x seed) on these shares of the fold's "
                            "training groups, nested and the same for every model (e.g. 0.25,0.5,1; default: the "
                            "profile's 'train_fractions', else 1); validation and test parts are unchanged, and "
                            "fraction 1 is the normal run")
    bench.add_argument("--fold-manifest", type=Path, default=None,
                       help="use this existing fold manifest instead of creating one (e.g. an official one); "
                            "a path that does not exist is an error")
    bench.add_argument("--output", type=Path, default=Path("runs"), help="where runs and records go (default: runs/)")
    bench.add_argument("--leaderboard-dir", type=Path, default=Path("leaderboard/results"),
                       help="where the Markdown/CSV tables go (default: leaderboard/results/)")
    bench.add_argument("--accelerator", default="auto",
                       help="cpu, gpu (cuda or mps), or any other accelerator Lightning knows; default auto")
    bench.add_argument("--devices", type=_count(1), default=1, help="devices per training run; N > 1 trains with DDP")
    bench.add_argument("--retry-failed", action="store_true",
                       help="run again the runs recorded as failed because of their model or data (a run that "
                            "failed under other --accelerator/--devices, or because of the machine: no usable "
                            "device, GPU out of memory, disk full, is run again without this option)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    bench.add_argument("--no-wandb", action="store_true",
                       help="no W&B dashboards (default: W&B offline, or online when WANDB_API_KEY / WANDB_MODE "
                            "say so; also MATCV_WANDB=off)")
    bench.add_argument("--parallel-runs", type=_count(1), default=1, metavar="K",
                       help="run K independent model x fold runs at once: K worker processes, one GPU each "
                            "(K x --devices GPUs needed) or on CPU cores/K torch threads each; with --launcher "
                            "local/slurm, at most K jobs at once (default 1: one after the other)")
    bench.add_argument("--launcher", choices=["none", "local", "slurm"], default="none",
                       help="slurm: submit one submitit job per pending model x fold and wait for them; local: "
                            "the same with submitit's local executor (subprocesses on this machine); none: run "
                            "here (default). Runs are claimed and re-checked, so re-runs and concurrent "
                            "processes never duplicate or lose one")
    bench.add_argument("--slurm-partition", default=None, help="Slurm partition of the jobs (--launcher slurm)")
    bench.add_argument("--slurm-time-min", type=_count(1), default=240,
                       help="time limit per job in minutes (default 240)")
    bench.add_argument("--slurm-gpus-per-node", type=_count(0), default=None,
                       help="GPUs per job (default: --devices, or 0 with --accelerator cpu)")
    bench.add_argument("--slurm-cpus-per-task", type=_count(1), default=None,
                       help="CPU cores per job (default: Slurm's)")

    data = commands.add_parser("data", help="generate the built-in data, or check your own data root",
                               description="Generate the built-in synthetic data of a task's profile (once; it is "
                                           "cached) and print where it is, or validate a data root of your own.")
    data.add_argument("--task", default="segmentation", help="task whose data to generate (default: segmentation)")
    data.add_argument("--profile", default="quick", help="profile whose generator settings to use (default: quick)")
    data.add_argument("--check", type=Path, default=None, metavar="DATA_ROOT",
                      help="validate DATA_ROOT/manifest.csv and read every image and mask")
    data.add_argument("--export-manifest", type=Path, default=None, metavar="RELEASE_FOLDER",
                      help="write the NASA superalloy release's preset as a plain user folder's manifest.csv + "
                           "dataset.yaml into RELEASE_FOLDER (copy the release first: the two files change its "
                           "data hash); its split column is --split's")
    data.add_argument("--split", default="official", choices=["official", "ood"],
                      help="with --export-manifest: the release protocol written as the split column "
                           "(default official)")

    predict = commands.add_parser("predict", help="rate new photos with a trained checkpoint (rating/ordinal tasks)",
                                  description="Predict the ASTM rating of every image in PHOTOS_DIR with a checkpoint "
                                              "written by `matcv bench --task rating|ordinal` (runs/.../checkpoints/best.ckpt). "
                                              "Unreadable files get their error in the CSV; the rest are still rated.")
    predict.add_argument("photos_dir", type=Path, metavar="PHOTOS_DIR", help="folder of photos (searched recursively)")
    predict.add_argument("--task", default="rating", choices=["rating", "ordinal"], help="task of the checkpoint")
    predict.add_argument("--checkpoint", type=Path, required=True, help="a best.ckpt from a rating/ordinal benchmark run")
    predict.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default predictions.csv)")

    generate = commands.add_parser(
        "generate", help="Al-Si micrographs from a trained AlloyGAN/cGAN checkpoint, for a composition",
        description="Write PNG micrographs generated for an alloy composition (wt%%), cooling rate and Sr/P "
                    "modification, from a checkpoint written by `matcv bench --task alloygan`.")
    generate.add_argument("--checkpoint", type=Path, required=True, help="runs/alloygan/.../checkpoints/best.ckpt")
    generate.add_argument("--alloy", default=None, help="a Table 6 alloy name (A356, A393, ...) instead of --si ... --ni")
    for element in ("si", "fe", "cu", "mn", "mg", "ni"):
        generate.add_argument(f"--{element}", type=float, default=None, help=f"{element.capitalize()} in wt%% (default 0)")
    generate.add_argument("--cooling-rate", type=float, required=True, help="cooling rate in K/s (e.g. 2.5, 10, 57, 143)")
    generate.add_argument("--modified", action="store_true", help="Sr/P-modified melt")
    generate.add_argument("--n", type=int, default=4, help="how many images (default 4)")
    generate.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    generate.add_argument("--out", type=Path, default=Path("generated"), help="output folder (default generated/)")

    board = commands.add_parser("leaderboard", help="rebuild the leaderboard tables from the run records",
                                description="Rebuild Markdown/CSV leaderboards from every runs/<task>/<data>/<profile>/records.jsonl "
                                            "and the committed reference board (leaderboard/reference/; a local run "
                                            "replaces its published copy).")
    board.add_argument("--runs", type=Path, default=Path("runs"), help="folder of benchmark runs (default: runs/)")
    board.add_argument("--out", type=Path, default=Path("leaderboard/results"), help="output folder")
    board.add_argument("--track", default=None, metavar="TRACK",
                       help='only the models of one track (from their model cards): "from scratch", '
                            '"pretrained (ImageNet)", "pretrained (in-domain)" or "extra data"')
    board.add_argument("--publish", type=Path, action="append", default=[], metavar="RUN_FOLDER",
                       help="first copy this benchmark folder (runs/<task>/<dataset>/<profile>) to the committed "
                            "reference board, leaderboard/reference/, and write its scores into the built-in "
                            "models' cards (repeatable)")
    board.add_argument("--no-reference", action="store_true",
                       help="tables from --runs only, without the committed reference board")

    verify = commands.add_parser(
        "verify", help="recompute every run's metrics from the test predictions it kept (predictions.npz)",
        description="For every successful run under RUNS_DIR whose record names its predictions.npz: check the "
                    "file's sha256, rebuild the fold's ground truth from the run's data and fold manifest, rescore "
                    "the predictions with the task's leaderboard scorer (not the model's code) and compare with the "
                    "recorded metrics and per-item values. Exit status 1 on any mismatch or missing/corrupt file.")
    verify.add_argument("runs_dir", type=Path, nargs="?", default=Path("runs"), metavar="RUNS_DIR",
                        help="folder of benchmark runs (default: runs/)")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar")

    from matcv.benchmarks.submission.submit import add_arguments as add_submit_arguments

    submit = commands.add_parser(
        "submit", help="benchmark a model of your own on the official folds and write a submission folder",
        description="Train and test an external model (a factory returning an nn.Module, or a LightningModule "
                    "class) on every fold of the official fold manifest; write leaderboard/submissions/<task>/<name>/ "
                    "(metadata.json + test predictions, .npz). `matcv leaderboard` validates and scores it.")
    add_submit_arguments(submit)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "bench":
            task, data_root = resolve_data_argument(args.task, args.data, args.data_root)
            task = adapted_task(task, data_root, args.image_size, args.crop_size)  # fitted to dataset.yaml, sizes
            run_and_report(task, args.profile, data_root=data_root, models=args.models, folds=args.folds,
                           seeds=args.seeds, train_fractions=args.train_fraction,
                           output_dir=args.output, accelerator=args.accelerator, devices=args.devices,
                           retry_failed=args.retry_failed, fold_manifest=args.fold_manifest,
                           leaderboard_dir=args.leaderboard_dir, progress=not args.no_progress,
                           parallel_runs=args.parallel_runs, launcher=args.launcher, log_wandb=not args.no_wandb,
                           launcher_options={"partition": args.slurm_partition, "time_min": args.slurm_time_min,
                                             "gpus_per_node": args.slurm_gpus_per_node,
                                             "cpus_per_task": args.slurm_cpus_per_task})
        elif args.command == "predict":
            from matcv.benchmarks.inference.predict import predict_ratings

            out, rated, failed = predict_ratings(args.checkpoint, args.photos_dir, args.out)
            print(f"rated {rated} photo(s){f', {failed} unreadable (their errors are in the CSV)' if failed else ''}: {out}")
        elif args.command == "data":
            return _data(args)
        elif args.command == "generate":
            return _generate(args)
        elif args.command == "submit":
            from matcv.benchmarks.submission.submit import run_from_args

            return run_from_args(args)
        elif args.command == "verify":
            from matcv.leaderboard.verify import verify_command

            return verify_command(args.runs_dir, progress=not args.no_progress)
        elif args.command == "leaderboard":
            from matcv.leaderboard.model_cards import check_track
            from matcv.leaderboard.rebuild import write_all_leaderboards

            from matcv.leaderboard import reference

            for folder in args.publish:
                print(f"published {folder} -> {reference.publish(folder, reference.REFERENCE_DIR, reference.CARDS_DIR)}")
            written = write_all_leaderboards(args.runs, args.out, track=check_track(args.track),
                                             reference_dir=None if args.no_reference else reference.REFERENCE_DIR)
            if not written:
                print(f"no records under {args.runs}/<task>/<dataset>/<profile>/records.jsonl; run `matcv bench` first")
                return 1
            for path in written:
                print(path.read_text())
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"matcv: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        # Ctrl-C: one line saying what happens to the work (a bench names the runs it stopped), no traceback.
        if args.command == "bench":
            said = str(interrupt) if str(interrupt) else (
                "interrupted (Ctrl-C) before the runs started: nothing was recorded; the next `matcv bench` "
                "starts again where this one stopped")
        else:
            said = f"interrupted (Ctrl-C); `matcv {args.command}` did not finish"
        print(f"\nmatcv: {said}", file=sys.stderr)
        return 130
    return 0


def run_and_report(task: str | Path, profile: str = "quick", leaderboard_dir: str | Path = "leaderboard/results",
          print_tables: bool = True, **run_options):
    """``matcv bench``: the harness runs every pending model x fold (records), then this benchmark's tables are
    written by the leaderboard's own function, the one ``matcv leaderboard`` uses. Returns the ``Benchmark``."""
    from matcv.benchmarks.harness.runner import log_leaderboard_to_wandb, run_benchmark
    from matcv.leaderboard.rebuild import write_benchmark_tables

    benchmark = run_benchmark(task, profile, **run_options)
    for done in (benchmark, *benchmark.companions):
        if done.running_elsewhere:
            # Its tables would miss those runs, and could land on disk after the complete ones that process
            # writes when it finishes: leave the tables to it.
            n = done.running_elsewhere
            print(f"\n[matcv] {done.config.task}/{done.folder.name}: this process has done its runs, but {n} "
                  f"run{'s are' if n != 1 else ' is'} still running in another process; their results will appear "
                  f"when it finishes (it writes the tables then; or run `matcv leaderboard` afterwards)", flush=True)
            continue
        # The benchmark this process ran (its fold manifest and data version), whatever else the folder holds.
        tables = write_benchmark_tables(done.folder, leaderboard_dir, done.config,
                                        benchmark=(done.fold_manifest_sha256, done.data_sha256))
        if tables:
            log_leaderboard_to_wandb(done, tables[0].with_suffix(".csv"))
        for markdown in tables if print_tables else []:
            print("\n" + markdown.read_text())
    return benchmark


def resolve_data_argument(task: str, data: str | None, data_root: Path | None) -> tuple[str, Path | None]:
    """``--data NAME`` picks the task's YAML for a named real dataset (``<task>-<NAME>.yaml``); ``--data FOLDER``
    is a data root. Returns (task or YAML to run, data root)."""
    if data is None:
        return task, data_root
    named = named_datasets(task).get(data)
    if named is not None:
        return named, data_root
    if Path(data).is_dir():
        if data_root is not None:
            raise ConfigError(f"--data {data} is a folder and --data-root {data_root} another: give one")
        return task, Path(data)
    raise ConfigError(f"--data {data!r} is neither a folder nor a named dataset of task {task!r} "
                      f"(named datasets: {', '.join(named_datasets(task)) or 'none'})")


def _generate(args) -> int:
    from matcv.benchmarks.inference.generate import generate_images

    given = {e.capitalize(): getattr(args, e) for e in ("si", "fe", "cu", "mn", "mg", "ni")
             if getattr(args, e) is not None}
    if args.alloy is not None and given:
        raise ValueError("give either --alloy or the composition (--si ... --ni), not both")
    paths, seconds = generate_images(args.checkpoint, given or None, args.cooling_rate, args.modified, args.n,
                                     args.out, alloy=args.alloy, seed=args.seed)
    print(f"wrote {len(paths)} image(s) to {args.out} ({1000 * seconds:.1f} ms per image on "
          "this machine's CPU, model loaded)")
    return 0


def _data(args) -> int:
    if args.export_manifest is not None:
        from matcv.datamodules.superalloy_files import export_manifest

        written = export_manifest(args.export_manifest, args.split)
        print("wrote " + " and ".join(str(p) for p in written) + f" (split column: the {args.split!r} protocol); "
              f"check it with `matcv data --check {args.export_manifest}`")
        return 0
    # A folder with a dataset.yaml is checked by the DataModule `matcv bench` would read it with.
    config = TaskConfig.load(adapted_task(args.task, args.check) if args.check is not None else args.task)
    datamodule_cls = config.datamodule_class()
    dm_args = config.datamodule_args(args.profile)
    if args.check is not None:
        index = datamodule_cls.check_dataset(args.check, **dm_args)
        print(f"{args.check}: OK - {len(index['items'])} images in {len(set(index['groups']))} groups")
        for note in index.get("notes", []):
            print(f"note: {note}")
        for warning in index.get("warnings", []):  # runs, but must not pass unseen (a leaky published split)
            print(f"warning: {warning}")
        pixels = index.get("class_pixels")
        if pixels:
            total = max(1, sum(pixels.values()))
            print("pixels per class: " + ", ".join(f"{name} {100 * n / total:.3g} %" for name, n in pixels.items()))
            for name in [name for name, n in pixels.items() if n == 0]:
                print(f"note: class {name!r} has no pixel in any mask: no model can learn it")
        return 0
    root = datamodule_cls.prepare_dataset(None, config.profile(args.profile).get("generator"))
    index = datamodule_cls.index_dataset(root, **dm_args)
    print(f"{root}\n{len(index['items'])} images of {len(set(index['groups']))} groups; manifest {root / 'manifest.csv'}")
    if index["strata"] is not None:
        counts = {k: index["strata"].count(k) for k in sorted(set(index["strata"]))}
        print(f"images per {config.raw.get('stratify_column', 'stratum')}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
