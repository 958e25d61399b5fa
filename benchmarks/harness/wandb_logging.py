"""Weights & Biases dashboards for benchmarks: one W&B run per model × fold, one summary run per benchmark.

Mode (``wandb_mode``): off when ``--no-wandb`` or ``MATCV_WANDB=off``; otherwise W&B's own settings decide —
``WANDB_MODE`` if set, else online when ``WANDB_API_KEY`` is set, else **offline** (files only, nothing leaves
the machine; ``wandb sync <folder>/wandb/offline-run-*`` uploads them later).

Layout on the dashboard:
  project   ``matcv-<task>`` (override with ``WANDB_PROJECT``)
  group     ``<task>/<dataset>/<profile>/<fold-manifest sha[:12]>``: one benchmark, every model and fold
  run       ``<model>-fold<k>`` (job type ``train``), config = the resolved run config + provenance (git commit,
            package versions, data and manifest hashes); per-epoch curves from Lightning's ``WandbLogger``;
            at the end the test metrics in the run summary (``test/<metric>``), the run's figures
            (segmentation overlays, reconstructions, generated grids, confusion matrices) as images
  summary   ``leaderboard`` (job type ``leaderboard``): the leaderboard as a W&B table and a bar chart of each
            metric's mean over folds per model

Files go under the benchmark folder (``runs/<task>/<dataset>/<profile>/wandb/``).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pandas as pd

OFF_VALUES = {"off", "disabled", "false", "0", "no"}
FIGURE_NAMES = ("test_examples.png", "samples.png", "confusion_matrix.png")


def wandb_mode(enabled: bool = True) -> str | None:
    """"offline", "online", "disabled"-as-None, or whatever WANDB_MODE says (module doc)."""
    if not enabled or os.environ.get("MATCV_WANDB", "").strip().lower() in OFF_VALUES:
        return None
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("disabled", "off"):
        return None
    if mode:
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def benchmark_group(task: str, dataset: str, profile: str, manifest_sha256: str) -> str:
    return f"{task}/{dataset}/{profile}/{manifest_sha256[:12]}"


def project_name(task: str) -> str:
    return os.environ.get("WANDB_PROJECT") or f"matcv-{task}"


def run_logger(mode: str, folder: Path, task: str, group: str, name: str, run_id: str, config: dict):
    """Lightning's WandbLogger for one run; its experiment starts lazily (on rank 0 under DDP)."""
    from lightning.pytorch.loggers import WandbLogger

    save_dir = folder / "wandb"
    save_dir.mkdir(parents=True, exist_ok=True)
    # resume="allow": under DDP spawn the epochs are logged from the rank-0 process and the test summary from
    # this one; the explicit id makes both land in one W&B run.
    return WandbLogger(project=project_name(task), group=group, name=name, id=run_id, save_dir=str(folder),
                       mode=mode, config=config, job_type="train", resume="allow", reinit="finish_previous")


def finish_run(logger, record: dict, run_dir: Path) -> None:
    """Test metrics into the run summary, the run's figures as images, then close the run."""
    import wandb

    run = logger.experiment
    summary = {f"test/{name}": value for name, value in record.get("metrics", {}).items()}
    summary.update({"status": record.get("status"), "fit_s": record.get("durations", {}).get("fit_s"),
                    "best_val": record.get("best_val"), "epochs": record.get("epochs")})
    if record.get("error"):
        summary["error"] = record["error"][:500]
    run.summary.update({k: v for k, v in summary.items() if v is not None})
    images = {f"figures/{name.removesuffix('.png')}": wandb.Image(str(run_dir / name))
              for name in FIGURE_NAMES if (run_dir / name).is_file()}
    confusion = (record.get("details") or {}).get("confusion_matrix")
    if confusion is not None:
        images["figures/confusion_matrix_table"] = wandb.Table(
            data=[[str(i), str(j), int(count)] for i, row in enumerate(confusion) for j, count in enumerate(row)],
            columns=["true", "predicted", "count"])
    if images:
        run.log(images)
    run.finish()


def log_leaderboard(mode: str, folder: Path, task: str, group: str, leaderboard_csv: Path, metrics: list[str],
                    config: dict) -> None:
    """The benchmark's summary run: the leaderboard as a table, one bar chart per metric."""
    import wandb

    table = pd.read_csv(leaderboard_csv)
    run = wandb.init(project=project_name(task), group=group, name="leaderboard", job_type="leaderboard",
                     dir=str(folder), mode=mode, config=config, reinit="finish_previous")
    try:
        columns = [c for c in table.columns if not c.endswith("_per_fold")]
        board = wandb.Table(dataframe=table[columns])
        charts = {"leaderboard": board}
        for metric in metrics:
            if f"{metric}_mean" in table.columns:
                data = wandb.Table(dataframe=table[["model", f"{metric}_mean"]].rename(columns={f"{metric}_mean": metric}))
                charts[f"charts/{metric}"] = wandb.plot.bar(data, "model", metric, title=f"{metric} (mean over folds)")
        run.log(charts)
        run.summary.update({"n_models": int(len(table)), "ranked_by": metrics[0]})
    finally:
        run.finish()


def _log_chunks(data: bytes):
    """The payloads of a W&B transaction log (``run-<id>.wandb``): a 7-byte header (":W&B", magic, version), then
    LevelDB-log records (4-byte CRC, 2-byte length, 1-byte type: full / first / middle / last) in 32 KiB blocks.
    Read here because wandb >= 0.19 (its Go core) no longer ships a Python reader, and an offline run has no
    ``wandb-summary.json``."""
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (missing the ':W&B' header)")
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a record header is zero padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + 7])
        payload = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload
            pending = b""


def read_offline_run(run_folder: str | Path) -> dict:
    """What an offline run holds, without uploading it: {"run_id", "name", "group", "project", "job_type",
    "config", "summary"} (the summary as its last values). For checks and for users who want to look before
    ``wandb sync``."""
    from wandb.proto import wandb_internal_pb2

    folder = Path(run_folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"no run-*.wandb transaction log in {folder}")
    info: dict = {"config": {}, "summary": {}}
    for payload in _log_chunks(logs[0].read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info.update(run_id=run.run_id, name=run.display_name, group=run.run_group, project=run.project,
                        job_type=run.job_type)
            items = run.config.update
        elif kind == "config":
            items = record.config.update
        elif kind == "summary":
            for item in record.summary.update:
                info["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            continue
        else:
            continue
        for item in items:
            info["config"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return info
