#!/usr/bin/env bash
# The GPU check, prepared for the first session that is lent a device: a preflight (imports, pinned versions, CUDA,
# bf16: one line, exit 2), the desk study's pretraining and one Df column in bf16 (tokens/s and MFU from
# pretraining's own log, each stage's wall time, BLEU), bench_train.py (our loop against Seq2SeqTrainer, both bf16
# on CUDA), then bench_step.py (t5_base at 16 x 512 in bf16, compile off and on: tokens/s and MFU). Everything
# lands in $OUT: summary.md, summary.json, and the benches' output. Record the numbers in docs/benchmarks.md.
#
#   make gpu-bundle                       # here: gpu-requirements.txt's wheels (.whl/) + the en-de corpus slice
#   scripts/gpu_check.sh                  # there (the device tool's run), with carry [".whl", ".cache/l10n-en-de.tar.xz"]
#   scripts/gpu_check.sh --small          # the same steps on the smoke scale, on a CPU in about a minute (tested)
#
# Sized for <= 8 minutes on one H100; each step has its own time limit so a slow one cannot eat the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=desk DF_COLUMN=first BENCH_STEPS=200 BENCH_REPEATS=2 STUDY_LIMIT=250 BENCH_LIMIT=90 STEP_LIMIT=120
PREFLIGHT=() STEP_ARGS=()
if [ "${1:-}" = "--small" ]; then
  SCALE=smoke BENCH_STEPS=24 BENCH_REPEATS=1 STUDY_LIMIT=900 BENCH_LIMIT=600 STEP_LIMIT=300
  PREFLIGHT=(--cpu) STEP_ARGS=(--small)
fi
OUT=${OUT:-$(mktemp -d)}
WORK=${GPU_CHECK_WORK:-$(mktemp -d)}
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export DS_CACHE=${DS_CACHE:-$PWD/.cache} PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$DS_CACHE"

if [ ! -f "$DS_CACHE/l10n/manifest.json" ]; then
  [ -f .cache/l10n-en-de.tar.xz ] || { echo "gpu_check: no corpus at $DS_CACHE/l10n and no .cache/l10n-en-de.tar.xz"; exit 2; }
  tar -xJf .cache/l10n-en-de.tar.xz -C "$DS_CACHE"
fi
# Preflight (scripts/gpu_preflight.py): imports, exact versions (gpu-requirements.txt), CUDA, bf16; one line.
# The GPU machine has torch and most of the stack but no registry: what it lacks or holds at another version is
# installed from the carried wheels, resolved with their dependencies against the image, then `pip check`ed.
if ! "$PY" scripts/gpu_preflight.py "${PREFLIGHT[@]}" > "$OUT/preflight.txt" 2>&1; then
  [ -d .whl ] || { tail -n 1 "$OUT/preflight.txt"; exit 2; }
  "$PY" -m pip install --quiet --no-index --find-links .whl -r gpu-requirements.txt > "$OUT/pip.txt" 2>&1 \
    || { echo "gpu_check preflight FAILED: pip install from .whl/: $(tail -n 1 "$OUT/pip.txt")"; exit 2; }
  "$PY" -m pip check > "$OUT/pip-check.txt" 2>&1 \
    || { echo "gpu_check preflight FAILED: pip check: $(head -n 1 "$OUT/pip-check.txt")"; exit 2; }
  "$PY" scripts/gpu_preflight.py "${PREFLIGHT[@]}" > "$OUT/preflight.txt" 2>&1 \
    || { tail -n 1 "$OUT/preflight.txt"; exit 2; }
fi
cat "$OUT/preflight.txt"
"$PY" - <<'EOF' | tee "$OUT/device.txt"
import platform, torch
print(f"torch {torch.__version__}, python {platform.python_version()}, "
      + (f"{torch.cuda.get_device_name()} (bf16 {torch.cuda.is_bf16_supported()})" if torch.cuda.is_available()
         else f"CPU only, {torch.get_num_threads()} threads"))
EOF

# One Df column of the study: every pretraining rung of both mixtures (and Dp = 0) finetuned at one Df.
DF=$("$PY" - "$SCALE" "$DF_COLUMN" <<'EOF'
import sys
from hydra import compose, initialize_config_dir
from pathlib import Path
with initialize_config_dir(str(Path("conf").resolve()), version_base="1.3"):
    cfg = compose("config", overrides=["+sweep=en_de", f"scale={sys.argv[1]}"])
ladder = list(cfg.finetune.df_ladder)
print(ladder[0] if sys.argv[2] == "first" else ladder[-1])
EOF
)
STUDY=(+sweep=en_de "scale=$SCALE" "finetune.df_ladder=[$DF]" "paths.artifacts=$WORK/artifacts"
       "paths.reports=$WORK/reports")
t0=$(date +%s)
set +e
timeout "$STUDY_LIMIT" "$PY" -m pipeline "${STUDY[@]}" > "$OUT/study.log" 2>&1
study_rc=$?
set -e
study_s=$(( $(date +%s) - t0 ))
tail -n 5 "$OUT/study.log"

set +e
timeout "$BENCH_LIMIT" "$PY" scripts/bench_train.py --no-compile --steps "$BENCH_STEPS" --repeats "$BENCH_REPEATS" "scale=$SCALE" \
  "paths.artifacts=$WORK/bench-artifacts" > "$OUT/bench_train.txt" 2>&1
bench_rc=$?
set -e
tail -n 4 "$OUT/bench_train.txt"

# t5_base steps at 16 x 512 inputs in bf16 through the runtime, compile off and on: tokens/s and MFU (the rows
# of docs/benchmarks.md's "Measured MFU" table, which the planner's GPU-hours read)
set +e
timeout "$STEP_LIMIT" "$PY" scripts/bench_step.py "${STEP_ARGS[@]}" --json "$OUT/bench_step.json" \
  > "$OUT/bench_step.txt" 2>&1
step_rc=$?
set -e
grep -E "^(bench_step|\|)" "$OUT/bench_step.txt" || tail -n 3 "$OUT/bench_step.txt"

"$PY" - "$WORK" "$OUT" "$SCALE" "$DF" "$study_rc" "$study_s" "$bench_rc" "$step_rc" <<'EOF'
"""summary.json / summary.md from what the study wrote: pretraining's logged tokens/s and MFU, stage times, BLEU."""
import json, sys
from pathlib import Path
import pandas as pd

work, out, scale, df, study_rc, study_s, bench_rc, step_rc = sys.argv[1:]
work, out = Path(work), Path(out)
s = {"scale": scale, "df": int(df), "study_rc": int(study_rc), "study_seconds": int(study_s), "bench_rc": int(bench_rc),
     "bench_step_rc": int(step_rc), "preflight": (out / "preflight.txt").read_text().strip(),
     "device": (out / "device.txt").read_text().strip(), "pretrain": {}, "stage_seconds": {}}
for run in sorted((work / "artifacts" / "pretrain").glob("pt-*")):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()] \
        if (run / "metrics.jsonl").exists() else []
    rows = [r for r in rows if "tokens_per_s" in r][1:] or [r for r in rows if "tokens_per_s" in r]  # skip warm-up
    if rows:
        mid = lambda k: sorted(r[k] for r in rows if r.get(k) is not None)[len(rows) // 2] if any(r.get(k) for r in rows) else None
        s["pretrain"][run.name] = {"tokens_per_s": mid("tokens_per_s"), "mfu": mid("mfu"), "log_rows": len(rows)}
for stage in ("tokenizer", "tokens", "init", "pretrain", "finetune", "evaluate"):
    secs = []
    for st in (work / "artifacts" / stage).glob("*/status.json"):
        d = json.loads(st.read_text())
        if d.get("seconds") is not None:
            secs.append(d["seconds"])
    s["stage_seconds"][stage] = {"tasks": len(secs), "sum": round(sum(secs), 1)}
res = work / "reports" / "en_de" / "results.csv"
if res.exists():
    t = pd.read_csv(res)
    ok = t[t["status"] == "ok"]
    s["cells_ok"], s["cells"] = int(len(ok)), int(len(t))
    s["bleu_max"] = float(ok["bleu"].max()) if len(ok) else None
    s["results"] = ok[["mixture", "dp", "df", "bleu", "chrf", "ce"]].to_dict("records")
bench = (out / "bench_train.txt").read_text().splitlines() if (out / "bench_train.txt").exists() else []
s["bench_train"] = [x for x in bench if x.startswith(("date:", "model:", "peak:", "ours", "transformers", "ratio:", "bf16/fp32"))]
step = (out / "bench_step.txt").read_text().splitlines() if (out / "bench_step.txt").exists() else []
s["bench_step"] = [x for x in step if x.startswith(("bench_step", "|"))]
(out / "summary.json").write_text(json.dumps(s, indent=1, default=str))
md = [f"# GPU check ({scale} scale, Df column {df})", "", s["device"], "",
      f"study: exit {study_rc} after {study_s} s; cells ok {s.get('cells_ok')} of {s.get('cells')}; best BLEU {s.get('bleu_max')}", ""]
md += [f"- pretrain {k}: {v['tokens_per_s']:,.0f} tokens/s" + (f", MFU {v['mfu']:.1%}" if v["mfu"] else "")
       for k, v in s["pretrain"].items()]
md += [f"- {k}: {v['tasks']} tasks, {v['sum']} s" for k, v in s["stage_seconds"].items()]
md += ["", "bench_train.py:", *[f"    {x}" for x in s["bench_train"]]]
md += ["", "bench_step.py (rows for docs/benchmarks.md, Measured MFU):", *[f"    {x}" for x in s["bench_step"]]]
(out / "summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
[ "$study_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$step_rc" -eq 0 ]
