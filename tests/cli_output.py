"""Read the JSON summary a `unimat` command prints last, from output that log lines share."""
from __future__ import annotations

import json


def summary_json(text: str) -> dict:
    """The last JSON object in `text` that starts at the beginning of a line.

    Why not `text.index("{")`: Prefect and Dask log lines interleave with the summary and may hold braces of
    their own (a Dask worker prints `{'relax_chunk-…'}`), so the summary is found from the end, at a line start.
    """
    decoder = json.JSONDecoder()
    start = len(text)
    while (start := text.rfind("{", 0, start)) >= 0:
        if start == 0 or text[start - 1] == "\n":
            try:
                obj, _ = decoder.raw_decode(text, start)
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(obj, dict):
                    return obj
    raise AssertionError(f"no JSON summary in the output; its end:\n{text[-2000:]}")
