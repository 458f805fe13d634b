"""Our config reader (`tadmodels.checkpoints.configs.read_config`, which evaluates a config's syntax
tree) against mmengine's `Config.fromfile` (which executes it), on every config of the given checkouts.

    PYTHONPATH=$PWD:DEPS .venv/bin/python benchmarks/config_reader_check.py CHECKOUT... [--ref-deps DEPS]

For each `.py` under `configs/` (the `_base_` folders excepted), both read it; the merged dicts are
compared with tuples and lists alike (mmengine keeps either). Counts: equal, different (named),
refused by us (named, with the reason), failing in mmengine too.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def normal(value):
    if isinstance(value, dict):
        return {key: normal(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [normal(item) for item in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkouts", type=Path, nargs="+")
    parser.add_argument("--ref-deps", type=Path, help="folder with mmengine")
    args = parser.parse_args()
    if args.ref_deps is not None:
        sys.path.insert(0, str(args.ref_deps))
    from mmengine.config import Config

    from tadmodels.checkpoints.configs import read_config

    for checkout in args.checkouts:
        counts = {"equal": 0, "different": 0, "refused by us": 0, "failing in mmengine": 0}
        for path in sorted((checkout / "configs").rglob("*.py")):
            if "_base_" in path.parts:
                continue
            try:
                theirs = normal(Config.fromfile(str(path)).to_dict())
            except Exception as error:  # noqa: BLE001 (a broken config in the checkout: counted, not ours to judge)
                counts["failing in mmengine"] += 1
                print(f"  mmengine fails on {path.relative_to(checkout)}: {str(error).splitlines()[0][:120]}")
                continue
            try:
                ours = normal(read_config(path))
            except ValueError as error:
                counts["refused by us"] += 1
                print(f"  refused {path.relative_to(checkout)}: {error}")
                continue
            same = ours == theirs
            counts["equal" if same else "different"] += 1
            if not same:
                print(f"  differs: {path.relative_to(checkout)}: {sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))}")
        print(f"{checkout.name}: " + ", ".join(f"{count} {name}" for name, count in counts.items()))


if __name__ == "__main__":
    main()
