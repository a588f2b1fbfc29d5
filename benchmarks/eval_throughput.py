"""Benchmark zero-shot evaluation speed: load time, classifier build time, images/s per batch size.

Usage:
    python benchmarks/eval_throughput.py                       # offline model, CPU
    python benchmarks/eval_throughput.py --device cuda --precision bf16 --batch-sizes 64 256

Images are generated shapes decoded through the normal evaluation path, so the figure
includes decoding and preprocessing in DataLoader workers as a real evaluation does.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from clipbench.data import load_shapes
from clipbench.evaluation import device_name
from clipbench.inference import run_inference
from clipbench.loading import ModelSpec, load_model
from clipbench.offline_model import OFFLINE_CHECKPOINT
from clipbench.prompts import load_prompt_set
from clipbench.timing import percentile_ms, timed
from clipbench.zero_shot import build_classifier

log = logging.getLogger("benchmarks.eval_throughput")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clipbench-tiny", help="OpenCLIP architecture")
    parser.add_argument("--pretrained", default=None, help="pretrained tag (hub weights)")
    parser.add_argument("--checkpoint", default=None, help="local checkpoint (default: the offline model's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--images-per-class", type=int, default=20, help="shapes images per class (24 classes)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--templates", default="openai")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)

    checkpoint = args.checkpoint or (str(OFFLINE_CHECKPOINT) if args.model == "clipbench-tiny" else None)
    loaded = load_model(ModelSpec(args.model, args.pretrained, checkpoint, args.device, args.precision))
    images = load_shapes(images_per_class=args.images_per_class, seed=2)
    timings: dict[str, float] = {}
    with timed(timings, "classifier_build_s", loaded.device):
        classifier = build_classifier(loaded, images.classes.classnames, load_prompt_set(args.templates), cache_dir=None)

    rows = []
    for batch_size in args.batch_sizes:
        started = time.perf_counter()
        output = run_inference(loaded, images, classifier, batch_size=batch_size, num_workers=args.num_workers,
                               warmup_batches=1, show_progress=False)
        rows.append({
            "batch_size": batch_size,
            "infer_images_per_s": output.throughput_images_per_s,
            "end_to_end_images_per_s": len(images) / (time.perf_counter() - started),
            "batch_latency_ms_p50": percentile_ms(output.batch_latencies_ms, 50),
        })

    report = {
        "model": args.model, "pretrained": args.pretrained, "device": str(loaded.device),
        "device_name": device_name(loaded.device),
        "precision": args.precision, "torch_threads": torch.get_num_threads(), "images": len(images),
        "load_time_s": loaded.load_time_s, "classifier_build_s": timings["classifier_build_s"], "runs": rows,
    }
    log.info("%s", json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
