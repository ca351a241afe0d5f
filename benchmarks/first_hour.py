"""The demo's workloads under torch's default threads and under diffenvs' thread policy, on the
machine as it is and beside a competing CPU-bound process.

Workloads (each timed in a fresh process, after loading the models and one warm-up):

* ``episode``: one 20-step ``DiffusionDenoise-v0`` episode of the world (one image);
* ``ppo``: one update of the ``demo`` PPO preset (8 images x 4 steps, full fine-tuning);
* ``sample``: 16 world images, 20 sampler steps (what ``diffenvs world sample --n 16`` does).

Modes: ``torch`` (``DIFFENVS_THREADS=torch``, OpenMP's default wait policy: one thread per core,
what every env and agent used before) and ``policy`` (the default now: one thread,
``OMP_WAIT_POLICY=PASSIVE``; see ``diffenvs/runtime.py``). Conditions: ``as-is`` (whatever else
runs on the machine; the load average is recorded) and ``+competitor`` (one extra process spinning
one core for the whole measurement).

    python benchmarks/first_hour.py                     # writes benchmarks/results/first_hour/
    python benchmarks/first_hour.py --repeats 3 --workloads ppo

Results: ``benchmarks/results/first_hour/first_hour.json`` (every timing) and ``.md`` (table);
the summary is in ``docs/results/first_hour.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path("benchmarks/results/first_hour")
WORKLOADS = ("episode", "ppo", "sample")
MODES = {
    "torch": {"DIFFENVS_THREADS": "torch"},
    "policy": {"DIFFENVS_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"},
}


def _worker(workload: str, repeats: int) -> dict:
    """Runs in a child process whose environment already holds the mode's variables."""
    from diffenvs.runtime import prepare_process

    prepare_process()  # reads DIFFENVS_THREADS; 'torch' leaves torch's default
    import torch

    if workload == "episode":
        import gymnasium as gym

        import diffenvs  # noqa: F401

        env = gym.make("DiffusionDenoise-v0", num_steps=20, reward="colourfulness")

        def run() -> None:
            env.reset(seed=0)
            done = False
            while not done:
                done = env.step(env.action_space.sample())[2]

    elif workload == "sample":
        from diffenvs.generate import ImageGenerator

        gen = ImageGenerator("world", num_inference_steps=20, guidance_scale=4.0)
        prompts = ["two small red stars on the left of a grass field, glowing"] * 16
        calls = [0]

        def run() -> None:
            calls[0] += 1  # fresh seeds every call: the generator caches (prompt, seed) images
            gen.images(prompts, list(range(16 * calls[0], 16 * calls[0] + 16)))

    elif workload == "ppo":
        from agents.ppo.config import PPOConfig
        from agents.ppo.train import train

        cfg = PPOConfig(
            preset="demo",
            num_updates=1 + repeats + 1,
            eval_episodes=0,
            reward_norm="none",
            save=False,
            progress=False,
            torch_threads=torch.get_num_threads(),
        )
        history = train(cfg)["history"]
        times = [history[0]["time_s"]] + [
            b["time_s"] - a["time_s"] for a, b in itertools.pairwise(history)
        ]
        return {"threads": torch.get_num_threads(), "seconds": times[1:]}
    else:
        raise ValueError(f"unknown workload {workload!r}; choose from {WORKLOADS}")
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"threads": torch.get_num_threads(), "seconds": times}


def measure(workload: str, mode: str, competitor: bool, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.pop("OMP_WAIT_POLICY", None)
    env.update(MODES[mode])
    spinner = None
    if competitor:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", workload, "--repeats", str(repeats)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{workload}/{mode} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result |= {"workload": workload, "mode": mode, "competitor": competitor, "load_1min": load}
    result["median_s"] = statistics.median(result["seconds"])
    return result


def table(rows: list[dict]) -> str:
    lines = [
        "| workload | condition | torch default threads | diffenvs policy (1 thread) | speed-up |",
        "|---|---|---|---|---|",
    ]
    names = {
        "episode": "one 20-step denoising episode",
        "ppo": "one PPO update (demo preset)",
        "sample": "16 world images, 20 steps",
    }
    for w in dict.fromkeys(r["workload"] for r in rows):
        for comp in (False, True):
            pair = {r["mode"]: r for r in rows if r["workload"] == w and r["competitor"] == comp}
            if len(pair) < 2:
                continue
            t, p = pair["torch"], pair["policy"]
            for r in (t, p):
                r["median_s"] = statistics.median(r["seconds"])
            cond = "+ one competing process" if comp else "as is"
            cond += f" (load {t['load_1min']:.1f} / {p['load_1min']:.1f})"
            lines.append(
                f"| {names[w]} | {cond} | {t['median_s']:.2f} s ({t['threads']} threads) | "
                f"{p['median_s']:.2f} s | {t['median_s'] / p['median_s']:.1f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per cell (median)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--table-only", action="store_true", help="rewrite the .md table from the saved .json"
    )
    args = parser.parse_args()
    if args.table_only:
        saved = json.loads((args.out / "first_hour.json").read_text())
        write_report(args.out, saved["meta"], saved["rows"])
        return
    if args.worker:
        print(json.dumps(_worker(args.worker, args.repeats)))
        return
    from tqdm.auto import tqdm

    cells = [(w, m, c) for w in args.workloads for c in (False, True) for m in ("torch", "policy")]
    rows = []
    for w, m, c in tqdm(cells, desc="first-hour benchmark"):
        rows.append(measure(w, m, c, args.repeats))
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "first_hour.json"
    if previous.exists() and set(args.workloads) != set(WORKLOADS):
        # A partial rerun replaces its workloads' rows and keeps the others.
        kept = json.loads(previous.read_text())["rows"]
        rows = [r for r in kept if r["workload"] not in args.workloads] + rows
        rows.sort(key=lambda r: WORKLOADS.index(r["workload"]))
    meta = {
        "command": "python benchmarks/first_hour.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs",
        "note": "other jobs (world training) may have been running: see load_1min per row",
    }
    write_report(args.out, meta, rows)


def write_report(out: Path, meta: dict, rows: list[dict]) -> None:
    (out / "first_hour.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = (
        f"# First-hour thread benchmark\n\n`{meta['command']}` on {meta['date']} "
        f"({meta['machine']}; {meta['note']}). Each cell: the median of its timed runs (2, or 3 "
        "PPO updates), after one warm-up, in a fresh process.\n\n" + table(rows) + "\n"
    )
    (out / "first_hour.md").write_text(text)
    print(text)
    print(f"wrote {out / 'first_hour.json'} and {out / 'first_hour.md'}")


if __name__ == "__main__":
    main()
