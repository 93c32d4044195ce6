"""`python -m tests.chaos`: the chaos suite at full size (`make chaos`), its table printed.

Options (or environment variables): --jobs N (CHAOS_JOBS, 500) per scenario, --seed S
(CHAOS_SEED, random and printed), --scenarios a,b (CHAOS_SCENARIOS, all), --s3-outage SECONDS
(CHAOS_S3_OUTAGE, 90), --nats-cluster N (CHAOS_NATS_CLUSTER, 3), --kills N (CHAOS_KILLS, 6)
service kills at random moments while the jobs arrive, --rate R (CHAOS_RATE, 10) jobs published
a second (so 500 jobs arrive over 50 s), --markdown (the table as Markdown too), --keep (keep
the stack's folder and logs). Exit status 1 when any scenario lost a job, created one twice,
ended one twice, mismatched its spend or overshot its budget, or a fault could not be undone.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time

from tests.chaos.run import SCENARIOS, Settings, run
from tests.chaos.verdict import table


def settings_from(argv: list[str]) -> tuple[Settings, bool]:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--jobs", type=int, default=int(env("CHAOS_JOBS") or 500))
    parser.add_argument(
        "--seed", type=int, default=int(env("CHAOS_SEED") or secrets.randbelow(10**6))
    )
    parser.add_argument("--scenarios", default=env("CHAOS_SCENARIOS") or ",".join(SCENARIOS))
    parser.add_argument("--s3-outage", type=float, default=float(env("CHAOS_S3_OUTAGE") or 90))
    parser.add_argument("--nats-cluster", type=int, default=int(env("CHAOS_NATS_CLUSTER") or 3))
    parser.add_argument("--kills", type=int, default=int(env("CHAOS_KILLS") or 6))
    parser.add_argument("--rate", type=float, default=float(env("CHAOS_RATE") or 10))
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    chosen = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown or args.jobs < 1:
        parser.error(
            f"scenarios are {', '.join(SCENARIOS)}; jobs >= 1 (got {unknown or args.jobs})"
        )
    settings = Settings(
        jobs=args.jobs, seed=args.seed, s3_outage=args.s3_outage, nats_cluster=args.nats_cluster,
        scenarios=chosen, kills=args.kills, rate=args.rate, keep=args.keep,
    )  # fmt: skip
    return settings, args.markdown


def main(argv: list[str]) -> int:
    settings, markdown = settings_from(argv)
    n = settings.nats_cluster
    nats_mode = f"a NATS cluster of {n}" if n > 1 else "one nats-server"
    print(f"chaos: seed {settings.seed}, {settings.jobs} jobs per scenario, {nats_mode}, "
          f"S3 outage {settings.s3_outage:g}s, {settings.kills} service kills, "
          f"{settings.rate:g} jobs/s",
          flush=True)  # fmt: skip
    began = time.monotonic()
    verdicts = run(settings, lambda line: print(line, flush=True))
    print(f"\nchaos: seed {settings.seed}, {time.monotonic() - began:.0f}s in all\n")
    print(table(verdicts))
    if markdown:
        print("\n" + table(verdicts, markdown=True))
    bad = [(v.scenario, v.problems()) for v in verdicts if not v.ok]
    for name, problems in bad:
        print(f"FAIL {name}: {'; '.join(problems)}")
    print("PASS" if not bad and verdicts else "FAIL")
    return 1 if bad or not verdicts else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
