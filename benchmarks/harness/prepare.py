"""Before any run: locate (or generate) and check the data, then create or verify the benchmark's fold manifest.

Layout of a benchmark folder ``<output>/<task>/<dataset>/<profile>/``:
  fold_manifest.json  the folds every model sees (created once; its sha256 is in every record)
  records.jsonl       one line per finished run (ok or failed), appended atomically
  task.yaml           a copy of the task YAML, when it is the user's own (the tables are rebuilt with it)
  <model>/fold-<k>/   checkpoints, per-epoch CSV logs and test predictions (predictions.npz) of one run (wiped if a
                      killed run left it); <model>/fold-<k>-seed-<r>/ for training seed r > 0 (--seeds);
                      <model>/fold-<k>-frac-<f>/ for a training fraction f < 1 (--train-fraction)
  claims/             one lock file per run key, held while that run trains (see records.RunClaims)
  slurm/              submitit's job scripts and logs (``--launcher slurm|local``)

The DataModule's class-level hooks used here are declared by ``matcv.datamodules.base.BenchmarkDataModule``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from matcv.benchmarks.harness.wandb_logging import benchmark_group
from matcv.datamodules.core.atomic_io import atomic_write_text, data_fingerprint
from matcv.datamodules.core.config import CONFIG_DIR, TaskConfig
from matcv.datamodules.core.records import PHOTO_FOLDS_SUFFIX, TASK_YAML_COPY, RunRecords
from matcv.datamodules.folds import (
    check_matches_data,
    make_fold_manifest,
    protocol_note,
    read_fold_manifest,
    write_fold_manifest,
)


@dataclass
class Benchmark:
    """Everything the runs of one benchmark share. It pickles as paths and the config's dict, so it travels to
    worker processes and submitit jobs."""

    config: TaskConfig
    profile: str
    data_root: Path
    dataset: str
    data_sha256: str
    folder: Path
    fold_manifest_path: Path
    fold_manifest_sha256: str
    records: RunRecords
    grouping: str  # the column folds are grouped by ("image_path": photo-level folds, leaky on purpose)
    log_wandb: bool = True  # W&B dashboards (offline unless the user's W&B settings say otherwise)
    companions: list[Benchmark] = field(default_factory=list)  # the companion profiles' benchmarks, when run
    # Runs of this benchmark another process (a second `matcv bench`) still held when this one finished its own:
    # its tables would be incomplete, so they are left to that process.
    running_elsewhere: int = 0

    @property
    def wandb_group(self) -> str:
        """The W&B group of every run of this benchmark and of its summary run."""
        return benchmark_group(self.config.task, self.dataset, self.folder.name, self.fold_manifest_sha256)


def prepare_benchmark(config: TaskConfig, profile: str, data_root: str | Path | None, output_dir: str | Path,
                      fold_manifest: str | Path | None = None, progress: bool = True,
                      photo_level_folds: bool = False) -> Benchmark:
    """Generate/locate the data, then create (or reuse and verify) the benchmark's fold manifest.

    ``fold_manifest``: an existing manifest to use instead (a path that is not a file is an error, checked before
    the data is touched).

    ``photo_level_folds`` makes every photo its own group (random photo-level folds, which let photos of one
    panel fall on both sides): deliberately leaky, only for the leakage report, in a folder of its own.
    """
    if fold_manifest is not None and not photo_level_folds:
        given = Path(fold_manifest)
        if not given.is_file():  # a typo must not become a freshly drawn manifest written to the typo's path
            what = "is a folder, not a file" if given.is_dir() else "not a file" if given.exists() else "no such file"
            raise FileNotFoundError(f"--fold-manifest {given}: {what}; give an existing fold manifest, or leave the "
                                    "option out to draw the folds into the benchmark folder's fold_manifest.json")
    prof = config.profile(profile)
    datamodule_cls = config.datamodule_class()
    dm_args = config.datamodule_args(profile)
    root = datamodule_cls.prepare_dataset(data_root, prof.get("generator"), progress=progress)
    index = datamodule_cls.check_dataset(root, progress=progress, **dm_args)  # every file, before any training
    for warning in index.get("warnings", []):  # e.g. a published split that leaks: run, but never silently
        print(f"[matcv] warning: {warning}", flush=True)
    dataset = datamodule_cls.dataset_name(root, generated=data_root is None)
    # The folder appears with its fold manifest (written atomically, parents included): data whose folds cannot
    # be drawn leaves no empty benchmark folder behind.
    folder = Path(output_dir) / config.task / dataset / (profile + PHOTO_FOLDS_SUFFIX if photo_level_folds else profile)
    groups = index["items"] if photo_level_folds else index["groups"]
    group_column = "image_path" if photo_level_folds else config.raw.get("group_column", "group")

    path = folder / "fold_manifest.json" if fold_manifest is None or photo_level_folds else Path(fold_manifest)
    fixed = None if photo_level_folds else datamodule_cls.fixed_fold_manifest(root, **dm_args)
    if path.exists():
        manifest, manifest_sha = read_fold_manifest(path)
        check_matches_data(manifest, dict(zip(index["items"], groups)), source=str(path))
        if len(manifest["folds"]) != prof["folds"]:
            raise ValueError(f"{path} has {len(manifest['folds'])} folds but profile {profile!r} asks for {prof['folds']}")
    elif fixed is not None:
        # A published split (e.g. the release's own train/val/test), taken as the publisher made it.
        manifest = fixed
        if len(manifest["folds"]) != prof["folds"]:
            raise ValueError(f"{datamodule_cls.__name__}'s {dm_args.get('split')!r} split has "
                             f"{len(manifest['folds'])} fold(s) but profile {profile!r} asks for {prof['folds']}")
        check_matches_data(manifest, dict(zip(index["items"], groups)), source=f"{dm_args.get('split')} split")
        manifest_sha = write_fold_manifest(path, manifest)
    else:
        manifest = make_fold_manifest(index["items"], groups, index["strata"], n_folds=prof["folds"],
                                      val_fraction=prof.get("val_fraction", 0.2), seed=prof.get("seed", 0),
                                      group_column=group_column, stratify_column=config.raw.get("stratify_column"))
        manifest_sha = write_fold_manifest(path, manifest)
    note = protocol_note(manifest)
    if note:  # a protocol other than grouped CV (a publisher's split, with any leak it declares): say so
        print(f"[matcv] {config.task}/{folder.name}: {note} ({path})", flush=True)
    if not photo_level_folds and Path(config.source).resolve().parent != CONFIG_DIR.resolve():
        # A task YAML of the user's own is kept with its runs: `matcv leaderboard` rebuilds the folder's tables
        # with it (metric directions, comparison, study), where no built-in YAML of that name says the same.
        atomic_write_text(folder / TASK_YAML_COPY, Path(config.source).read_text())
    return Benchmark(config, profile, root, dataset, data_fingerprint(root, index["files"]), folder, path,
                     manifest_sha, RunRecords(folder / "records.jsonl"), group_column)
