"""The machine part of every speed script: which devices and how many CPU threads, said before any number."""

from __future__ import annotations

import argparse

import torch


def add_machine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)


def set_up_machine(args: argparse.Namespace) -> list[str]:
    """Apply ``--threads``, print torch's version, threads and devices; the devices to measure on."""
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, devices {devices}")
    if "cuda" in devices:
        print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    return devices
