"""`make demo`: run RunAll on the configured dataset (the generated demo by default) and
print where the outputs are and the F1.

Uses the Luigi web scheduler when one answers on [core] scheduler_host:scheduler_port
(start it with `luigid`), so the run shows up at http://localhost:8082; otherwise a local
scheduler.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import time

import luigi

from pipeline import RunAll
from tasks.config import workdir


def scheduler_running(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--local-scheduler", action="store_true", help="never use luigid")
    args = ap.parse_args(argv)

    cfg = luigi.configuration.get_config()
    host = cfg.get("core", "scheduler_host", "localhost")
    port = int(cfg.get("core", "scheduler_port", 8082))
    local = args.local_scheduler or not scheduler_running(host, port)
    where = "a local scheduler" if local else f"luigid at http://{host}:{port}"
    print(f"footprints: running RunAll with {where}, workdir {workdir()}", flush=True)
    t0 = time.time()
    result = luigi.build([RunAll()], workers=args.workers, local_scheduler=local, detailed_summary=True,
                         log_level="INFO")
    print(result.summary_text)
    ok = result.status in (luigi.LuigiStatusCode.SUCCESS, luigi.LuigiStatusCode.SUCCESS_WITH_RETRY)
    print(f"\nfootprints: {'done' if ok else 'FAILED'} in {time.time() - t0:.0f} s")
    print(summary(workdir()))
    return 0 if ok else 1


def summary(wd) -> str:
    """Where the outputs are, and the headline metrics if the run got that far."""
    lines = [f"  workspace:   {wd}"]
    for name, sub in [("tiles", "tiles"), ("masks", "masks"), ("models", "models"), ("predictions", "predictions"),
                      ("outputs", "outputs")]:
        if (wd / sub).exists():
            lines.append(f"  {name + ':':<12} {wd / sub}")
    metrics = sorted((wd / "outputs").rglob("metrics.json"), key=lambda p: p.stat().st_mtime) if (wd / "outputs").exists() else []
    if metrics:
        m = json.loads(metrics[-1].read_text())
        lines.append(f"  metrics:     {metrics[-1]}")
        for split, block in (m.get("splits") or {"all": m}).items():
            t = block.get("total", block)
            if "f1" in t:
                lines.append(f"  F1 ({split}): {t['f1']:.3f}  precision {t['precision']:.3f}  recall {t['recall']:.3f}"
                             f"  (TP {t['tp']}, FP {t['fp']}, FN {t['fn']})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
