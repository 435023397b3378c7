"""Embedding throughput of a sentence-transformers model on a GPU (for the scale projection).

Runs wherever torch sees a CUDA device; the CPU machine this project is tested on has none,
so this script is run by hand on a GPU machine with the model folder and text files copied
there. For each text file and batch size it embeds every line once to warm up, then times a
second pass, in float32 and float16.

    python benchmarks/gpu_embed.py --model DIR --texts a.txt [b.txt ...] [--batch-sizes 128 512] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--texts", type=Path, nargs="+", required=True)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script measures GPU throughput")
    rows = []
    for dtype in (torch.float32, torch.float16):
        model = SentenceTransformer(str(args.model), device="cuda")
        model.to(dtype)
        for path in args.texts:
            texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            for batch in args.batch_sizes:
                model.encode(texts, batch_size=batch, show_progress_bar=False)  # warm-up pass
                torch.cuda.synchronize()
                start = time.perf_counter()
                model.encode(texts, batch_size=batch, show_progress_bar=False, convert_to_numpy=True)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                rows.append(
                    {
                        "texts": path.stem,
                        "n": len(texts),
                        "dtype": str(dtype).replace("torch.", ""),
                        "batch": batch,
                        "seconds": round(seconds, 3),
                        "texts_per_s": round(len(texts) / seconds, 1),
                    }
                )
                print(
                    f"{path.stem:12s} n={len(texts):6d} {rows[-1]['dtype']:8s} batch {batch:4d}: "
                    f"{rows[-1]['texts_per_s']:10,.0f} texts/s",
                    flush=True,
                )
    info = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    print(info)
    if args.json:
        print(json.dumps({"device": info, "rows": rows}))


if __name__ == "__main__":
    main()
