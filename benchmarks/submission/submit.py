"""``matcv submit``: benchmark a model defined outside matcv on an official fold manifest, as a submission.

The model is a reference ``package.module:name`` to either
  - a factory returning an ``nn.Module`` (for segmentation: images (B, 3, H, W) -> logits (B, 1, H, W)),
    trained by the task's factory task (``matcv.lightning_modules.factory_tasks``, e.g. BCE + Dice and Adam
    for segmentation) with the recording of the task's adapter (the module its YAML names under
    ``submission.adapter``), or
  - a LightningModule class following the harness's contract (a subclass of the task's evaluation class,
    e.g. ``matcv.lightning_modules.segmentation.SegmentationEvaluation``), instantiated with the hyper-parameters.
Every fold of the *official* fold manifest (``leaderboard/official/``) is run through the harness
(``prepare_benchmark`` / ``execute_run``), and the submission folder
``leaderboard/submissions/<task>/<name>/`` gets ``metadata.json`` and ``predictions/fold-<k>.npz`` (the test
predictions, ``item_ids`` + ``pred_<i>`` arrays, no pickles). ``metadata.json`` holds the model ``card`` (the
JSON Schema of ``leaderboard/model_card.schema.json``): the contributor's ``--card`` file, with what the runs
measured (parameters, hardware, device-hours, date) filled in where it leaves them out; checked before training. ``make leaderboard`` then validates it
without running any of its code and scores it from the predictions (``matcv.leaderboard.submission``).

``python -m matcv.benchmarks.submission.submit --refresh-official`` (re)creates the official fold manifests of the
profiles every task YAML lists under ``official`` and their index ``leaderboard/official/manifests.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from matcv.datamodules.core.config import (
    ConfigError,
    RunSpec,
    TaskConfig,
    available_tasks,
    check_seeds,
    submission_modules,
    training_seed,
)
from matcv.datamodules.core.atomic_io import atomic_write_bytes, atomic_write_text, sha256_file
from matcv.datamodules.core.model_card_format import CARD_SCHEMA, CardError, check_card
from matcv.datamodules.core.submission_format import (
    OFFICIAL_DIR,
    SCHEMA,
    STAGING_PREFIX,
    SUBMISSIONS_DIR,
    SubmissionError,
    check_name,
    read_official_index,
    text_problem,
)


# ---------------------------------------------------------------- official manifests


def official_entry(task: str, profile: str, dataset: str | None = None,
                   official_dir: str | Path = OFFICIAL_DIR) -> dict:
    """The official benchmark of (task, profile[, dataset]): its entry in ``manifests.json``."""
    entries = [e for e in read_official_index(official_dir)["benchmarks"].values()
               if e["task"] == task and e["profile"] == profile and (dataset is None or e["dataset"] == dataset)]
    if not entries:
        raise SubmissionError(f"no official fold manifest for task {task!r}, profile {profile!r}"
                              f"{f', dataset {dataset!r}' if dataset else ''} in {official_dir}/manifests.json")
    if len(entries) > 1:
        raise SubmissionError(f"several official datasets for task {task!r}, profile {profile!r}: "
                              f"{', '.join(e['dataset'] for e in entries)}; give --dataset")
    return entries[0]


def publish_official(config_ref: str | Path, profile: str, official_dir: str | Path = OFFICIAL_DIR,
                     work_dir: str | Path | None = None, progress: bool = False) -> dict:
    """Create the fold manifest of (task YAML, profile) with the harness and publish it under ``official_dir``:
    ``<task>/<dataset>/<profile>/fold_manifest.json`` plus its entry (sha256) in ``manifests.json``."""
    from matcv.benchmarks.harness.prepare import prepare_benchmark

    config = TaskConfig.load(config_ref)
    official_dir = Path(official_dir)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        bench = prepare_benchmark(config, profile, None, tmp, progress=progress)
        target = official_dir / config.task / bench.dataset / profile / "fold_manifest.json"
        atomic_write_bytes(target, bench.fold_manifest_path.read_bytes())
    manifest = json.loads(target.read_text())
    entry = {"task": config.task, "config": str(config_ref), "dataset": bench.dataset, "profile": profile,
             "path": target.relative_to(official_dir).as_posix(), "sha256": sha256_file(target),
             "n_folds": len(manifest["folds"]), "n_items": len(manifest["groups"]),
             "data_sha256": bench.data_sha256}
    index = read_official_index(official_dir)
    index["benchmarks"][f"{config.task}/{bench.dataset}/{profile}"] = entry
    index["benchmarks"] = dict(sorted(index["benchmarks"].items()))
    atomic_write_text(official_dir / "manifests.json", json.dumps(index, indent=1, sort_keys=True) + "\n")
    return entry


def official_profiles() -> dict[str, list[str]]:
    """YAML name -> the profiles its ``official`` key publishes (the built-in generated data, and the real data
    that is found here: ``refresh_official`` skips, with a message, what it cannot prepare)."""
    return {name: TaskConfig.load(name).official_profiles for name in available_tasks()}


def refresh_official(official_dir: str | Path = OFFICIAL_DIR, profiles: dict | None = None) -> list[dict]:
    entries = []
    for task, names in (profiles or official_profiles()).items():
        for profile in names:
            started = time.time()
            try:
                entry = publish_official(task, profile, official_dir, progress=True)
            except Exception as error:  # e.g. a generator that is missing here: publish the others
                print(f"[matcv] official {task}/{profile}: not published ({type(error).__name__}: {error})")
                continue
            print(f"[matcv] official {task}/{entry['dataset']}/{profile}: {entry['n_folds']} folds, "
                  f"{entry['n_items']} items, sha256 {entry['sha256'][:16]} ({time.time() - started:.0f} s)")
            entries.append(entry)
    return entries


# ---------------------------------------------------------------- the submission itself

MEASURED_CARD_FIELDS = ("parameters", "hardware", "training_device_hours", "date")


def read_card_file(path: str | Path) -> dict:
    """A contributor's model card (YAML or JSON), as written; ``submission_card`` completes and checks it."""
    try:
        card = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise SubmissionError(f"--card {path}: not a readable YAML/JSON file: {error}") from error
    if not isinstance(card, dict):
        raise SubmissionError(f"--card {path}: a model card is a mapping of fields, got {type(card).__name__}")
    return card


def hardware_text(info: dict) -> str:
    """The machine in words for a card: its GPUs, else its CPU and cores."""
    devices = [str(d) for d in info.get("cuda_devices") or []]
    if devices:
        return ", ".join(dict.fromkeys(f"{devices.count(d)}× {d}" if devices.count(d) > 1 else d for d in devices))
    return f"CPU {info.get('cpu') or '?'} ({info.get('cpu_count') or '?'} cores)"


def submission_card(name: str, task: str, model: str, authors: list[str] | None, given: dict | None,
                    measured: dict) -> dict:
    """The submission's model card: ``given`` (the contributor's, may be None) over defaults that claim nothing
    (no paper, no pretraining, no extra data, licence unspecified), the measured fields filled in where
    ``given`` leaves them out or null; ``SubmissionError`` naming the field when it breaks the schema."""
    given = dict(given or {})
    if given.get("task", task) != task:
        raise SubmissionError(f"--card: field 'task' is {given['task']!r}, the submission's is {task!r}")
    card = {"schema": CARD_SCHEMA, "name": name, "task": task, "authors": list(authors or []) or ["unspecified"],
            "paper": None, "code": None, "implementation": model, "licence": "unspecified", "pretrained_on": "none",
            "weights": None, "extra_training_data": "none", **given}
    for field in MEASURED_CARD_FIELDS:
        if card.get(field) is None:
            card[field] = measured.get(field)
    try:
        return check_card(card, "--card")
    except CardError as error:
        raise SubmissionError(str(error)) from None


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def submit(task: str, model: str, name: str, profile: str = "quick", dataset: str | None = None,
           authors: list[str] | None = None, description: str = "", hyperparameters: dict | None = None,
           tuning: str = "", official_dir: str | Path = OFFICIAL_DIR,
           submissions_dir: str | Path = SUBMISSIONS_DIR, work_dir: str | Path = "runs/submissions",
           accelerator: str = "auto", overwrite: bool = False, progress: bool = True, seeds: int = 1,
           card: dict | None = None) -> Path:
    """Run ``model`` on every fold of the official manifest of (task, profile); write the submission folder.

    ``seeds`` N > 1 trains every fold N times with N training seeds (``--seeds``, as ``matcv bench`` does). A
    submission holds one set of predictions per fold, so its predictions and claimed metrics stay those of seed 1
    (replicate 0, the run a single-seed submission makes) and its metadata says ``"seeds": N``; the record of every
    replicate, its metrics and per-item scores, goes to the work folder's ``records.jsonl`` as a bench's records do
    (``matcv leaderboard --runs <work dir>/<name>`` tables them).

    ``card``: the contributor's model card (``--card``); what it leaves out is filled in by ``submission_card``."""
    from matcv.benchmarks.harness.provenance import git_state, hardware, package_versions
    from matcv.benchmarks.harness.prepare import prepare_benchmark
    from matcv.benchmarks.harness.run import check_accelerator
    from matcv.benchmarks.submission.models import RECORDER, model_class

    check_name(name)
    # Free text the leaderboard would refuse is refused here, before hours of training.
    for field, text in [*((f"authors[{i}]", a) for i, a in enumerate(authors or [])),
                        ("description", description), ("tuning", tuning)]:
        problem = text_problem(text)
        if problem:
            raise SubmissionError(f"--{field.split('[')[0]}: {field} holds {problem}")
    check_accelerator(accelerator, 1)  # an impossible --accelerator fails now, not as every fold's failure
    machine = hardware()
    measured = {"hardware": hardware_text(machine), "training_device_hours": 0.0,
                "date": datetime.now(timezone.utc).date().isoformat()}
    submission_card(name, task, model, authors, card, measured)  # a bad card fails now, not after training
    try:
        seeds = check_seeds(seeds, "--seeds")
    except ConfigError as error:
        raise SubmissionError(str(error)) from None
    hyperparameters = dict(hyperparameters or {})
    if not isinstance(hyperparameters, dict):
        raise SubmissionError("hyper-parameters must be a JSON object")
    official_dir = Path(official_dir)
    entry = official_entry(task, profile, dataset, official_dir)
    final = Path(submissions_dir) / task / name
    if final.exists() and not overwrite:
        raise SubmissionError(f"{final} exists already: choose another --name or pass --overwrite")
    supported = submission_modules()
    if task not in supported:
        raise SubmissionError(f"submissions for task {task!r} are not supported (supported: {', '.join(supported)})")
    class_ref, model_args, kind = model_class(task, model, hyperparameters)

    config = TaskConfig.load(entry["config"])
    manifest_path = official_dir / entry["path"]
    if sha256_file(manifest_path) != entry["sha256"]:
        raise SubmissionError(f"{manifest_path} does not match its sha256 in {official_dir}/manifests.json")
    bench = prepare_benchmark(config, profile, None, Path(work_dir) / name, fold_manifest=manifest_path,
                              progress=progress)
    if bench.dataset != entry["dataset"]:
        raise SubmissionError(f"the data generated here is {bench.dataset!r}, the official benchmark's "
                              f"{entry['dataset']!r}: is matcv at the same version?")
    # The profile's trainer and data settings, without any built-in model's overrides; the submission's own
    # max_epochs / batch_size on top.
    trainer = {**config.profile(profile).get("trainer", {})}
    if "max_epochs" in hyperparameters:
        trainer["max_epochs"] = int(hyperparameters["max_epochs"])
    dm_args = config.datamodule_args(profile)
    if "batch_size" in hyperparameters:
        dm_args["batch_size"] = int(hyperparameters["batch_size"])
    run_configs = [config.run_config(profile, name, class_ref, model_args, trainer, dm_args, replicate=r)
                   for r in range(seeds)]
    manifest = json.loads(manifest_path.read_text())
    for fold in range(len(manifest["folds"])):  # every training seed in range, before any training
        training_seed(config.profile_seed(profile), fold, seeds - 1)
    folds, files, fit_seconds, parameters = [], {}, [], None
    for fold in range(len(manifest["folds"])):
        spec = RunSpec(config.task, profile, name, fold, run_configs[0], 0, seeds)
        record = _submission_run(bench, spec, name, accelerator, progress)
        fit_seconds.append(record["durations"]["fit_s"])
        parameters = record.get("n_parameters", parameters)
        test_ids = list(manifest["folds"][fold]["test"])
        if RECORDER.arrays is None:
            raise SubmissionError(f"fold {fold}: the test predictions were not recorded")
        recorded = RECORDER.arrays["item_ids"].tolist()
        missing = sorted(set(test_ids) - set(recorded))
        if missing or len(recorded) != len(test_ids):
            raise SubmissionError(f"fold {fold}: recorded predictions for {len(recorded)} items, the official "
                                  f"manifest has {len(test_ids)} test items ({len(missing)} missing, e.g. "
                                  f"{missing[:2]})")
        files[f"predictions/fold-{fold}.npz"] = _npz_bytes(RECORDER.arrays)
        folds.append({"fold": fold, "predictions": f"predictions/fold-{fold}.npz", "n_test": len(test_ids),
                      "metrics": record["metrics"], "fit_s": record["durations"]["fit_s"],
                      "epochs": record.get("epochs")})
        print(f"[matcv] submission {spec.label}: "
              + ", ".join(f"{k} {v:.4f}" for k, v in record["metrics"].items()), flush=True)
        # The other seeds after the predictions of seed 1 are kept (each test overwrites the recorder's arrays).
        for replicate in range(1, seeds):
            other = RunSpec(config.task, profile, name, fold, run_configs[replicate], replicate, seeds)
            extra = _submission_run(bench, other, name, accelerator, progress)
            fit_seconds.append(extra["durations"]["fit_s"])
            print(f"[matcv] submission {other.label}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in extra["metrics"].items()), flush=True)

    metadata = {
        "schema": SCHEMA, "name": name, "task": config.task, "profile": profile, "dataset": entry["dataset"],
        "authors": list(authors or []), "description": description,
        "model": {"reference": model, "kind": kind},
        "hyperparameters": hyperparameters, "tuning": tuning,
        "hardware": machine, "matcv": {**git_state(), "packages": package_versions()},
        "fold_manifest_sha256": entry["sha256"], "fold_manifest": entry["path"],
        "metrics": config.metrics, "folds": folds,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # Device-hours: training only, one device per run (the harness's submission runs use one).
        "card": submission_card(name, config.task, model, authors, card,
                                {**measured, "parameters": parameters if isinstance(parameters, int) else None,
                                 "training_device_hours": round(sum(fit_seconds) / 3600.0, 6)}),
    }
    if seeds > 1:  # the predictions are seed 1's; every seed's record is in the work folder's records.jsonl
        metadata["seeds"] = seeds
    files["metadata.json"] = (json.dumps(metadata, indent=1, sort_keys=True, default=str) + "\n").encode()
    # Written beside its final place, then moved there in one rename.
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=STAGING_PREFIX))
    try:
        for relative, data in files.items():
            atomic_write_bytes(staging / relative, data)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return final


def _submission_run(bench, spec: RunSpec, name: str, accelerator: str, progress: bool) -> dict:
    """One fold (one seed) of a submission through the harness; a failed one stops the submission. With several
    seeds every replicate's record is appended to the work folder's records, as ``matcv bench`` appends them."""
    from matcv.benchmarks.harness.run import execute_run

    key = f"submission|{name}|fold{spec.fold}" + (f"|seed{spec.replicate}" if spec.replicate else "")
    record = execute_run(bench, spec, key, accelerator, 1, progress)
    if record["status"] != "ok":
        raise SubmissionError(f"{spec.label} failed: {record['error']}\n{record.get('traceback', '')}")
    if spec.seeds > 1:
        bench.records.append(record)
    return record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="segmentation", choices=list(submission_modules()),
                        help="task (default: segmentation)")
    parser.add_argument("--model", required=True, metavar="PKG.MODULE:NAME",
                        help="a factory returning an nn.Module, or a LightningModule class")
    parser.add_argument("--name", required=True, help="submission name: a-z, 0-9, '.', '_', '-' (max 64)")
    parser.add_argument("--profile", default="quick", help="official profile (default: quick)")
    parser.add_argument("--dataset", default=None, help="official dataset, where a task/profile has several")
    parser.add_argument("--authors", type=lambda s: [a.strip() for a in s.split(",") if a.strip()], default=[],
                        help="comma-separated authors")
    parser.add_argument("--description", default="", help="one paragraph on the model")
    parser.add_argument("--hyperparameters", type=json.loads, default={}, metavar="JSON",
                        help="JSON object: lr, weight_decay, max_epochs, batch_size are used by the harness, the "
                             "rest is passed to the factory/class")
    parser.add_argument("--tuning", default="", help="how the hyper-parameters were chosen")
    parser.add_argument("--card", type=Path, default=None, metavar="CARD.yaml",
                        help="the model card (YAML/JSON, leaderboard/model_card.schema.json): paper, code, licence, "
                             "pretraining and weights sha256, extra data; measured fields are filled in "
                             "(default: a card claiming no pretraining and no extra data)")
    parser.add_argument("--model-path", type=Path, default=Path("."),
                        help="folder put on sys.path before importing --model (default: the current folder)")
    parser.add_argument("--official-dir", type=Path, default=OFFICIAL_DIR, help="official fold manifests")
    parser.add_argument("--submissions-dir", type=Path, default=SUBMISSIONS_DIR,
                        help="where the submission folder goes (default: leaderboard/submissions)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/submissions"), help="checkpoints and logs")
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default)")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="train every fold N times with N training seeds (default 1); the submission's "
                             "predictions are seed 1's, every seed's record goes to the work folder's records.jsonl")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing submission of that name")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    path = str(args.model_path.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    card = read_card_file(args.card) if args.card is not None else None
    folder = submit(args.task, args.model, args.name, args.profile, args.dataset, args.authors, args.description,
                    args.hyperparameters, args.tuning, args.official_dir, args.submissions_dir, args.work_dir,
                    args.accelerator, args.overwrite, not args.no_progress, args.seeds, card)
    print(f"submission written to {folder}; `matcv leaderboard` validates and scores it")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m matcv.benchmarks.submission.submit", description=__doc__.split("\n")[0])
    parser.add_argument("--refresh-official", action="store_true",
                        help="(re)create the official fold manifests of the built-in generated data")
    parser.add_argument("--official-dir", type=Path, default=OFFICIAL_DIR)
    args = parser.parse_args(argv)
    if args.refresh_official:
        refresh_official(args.official_dir)
        return 0
    parser.error("nothing to do: use --refresh-official (submissions: `matcv submit`)")
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigError, SubmissionError) as error:
        print(f"matcv: error: {error}", file=sys.stderr)
        sys.exit(2)
