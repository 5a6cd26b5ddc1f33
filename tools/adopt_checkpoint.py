"""Record a checkpoint copied into a run folder as the train stage's own output, so training resumes it.

    python tools/adopt_checkpoint.py train --campaign pretrain-perov_5 --batch-size 64 ...

Takes the same arguments as the `unimat train` run that will continue it and writes the train stage's
provenance record for exactly those settings on the campaign's tensorized data. `tools/pretrain.sh` uses it
after it restores a committed checkpoint on a fresh machine (otherwise the stage would stop at outputs
with no record). Only for a checkpoint that those settings made: the record is a statement, not a check.
"""

from __future__ import annotations

import sys

from flows.cli import _params, build_parser
from flows.stages import upstream
from unimat_core.provenance import StageRecord, write_record


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "train":
        print("adopt_checkpoint: give the arguments of a `unimat train` command", file=sys.stderr)
        return 2
    params = _params(args)
    layout = params["run"].layout()
    path = write_record(layout, StageRecord("train", params["train"].settings(), upstream(layout, "tensorize")))
    print(f"recorded {layout.train_checkpoint} as the train stage's output ({path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
