"""A trained pipeline folder → what comes back from a device call (part of ``run.sh``).

    python benchmarks/gpu_train/finish.py RUN_DIR OUT

Copies RUN_DIR/pipeline to OUT/pipeline without the carried text encoder (the pipeline names
the packaged MiniLM again, ``text_encoder_spec: minilm``, so it loads on any machine with the
project installed), and the run's log.jsonl and config.yaml beside it.
"""

import json
import shutil
import sys
from pathlib import Path

run, out = Path(sys.argv[1]), Path(sys.argv[2])
src, dst = run / "pipeline", out / "pipeline"
if dst.exists():
    shutil.rmtree(dst)
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
index = json.loads((dst / "model_index.json").read_text())
index.update(text_encoder=[None, None], tokenizer=[None, None], text_encoder_spec="minilm")
(dst / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
for name in ("log.jsonl", "config.yaml"):
    if (run / name).is_file():
        shutil.copy2(run / name, out / name)
size = sum(f.stat().st_size for f in dst.rglob("*") if f.is_file()) / 1e6
print(f"{dst}: {size:.1f} MB")
