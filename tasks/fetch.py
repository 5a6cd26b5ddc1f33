"""Fetch stage: load a dataset source into `<campaign>/fetch/structures.parquet` (+ rejected.parquet).

Whether an existing table may be reused is decided before this task by the stage's provenance record
(same source settings and same input file contents), see flows.stages.begin_stage.
"""

from __future__ import annotations

import json
from collections import Counter

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from tasks.artifacts import artifact_key
from unimat_core.datasets.materials_project import MaterialsProjectError
from unimat_core.datasets.source import DatasetSource, load_source
from unimat_core.errors import UserInputError
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import read_structures, write_structures

# local file-system errors are OSErrors too, but no retry heals them (e.g. --results-root is a file)
_LOCAL = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def _retry_on_network_error(task, task_run, state) -> bool:
    """Retry transient network failures only; a missing key, bad input or local file problem will not heal."""
    try:
        state.result()
    except (MaterialsProjectError, *_LOCAL):
        return False
    except (ConnectionError, TimeoutError, OSError):
        return True
    except Exception:
        return False
    return False


@task(name="fetch-structures", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_on_network_error)
def fetch_structures(source: DatasetSource, layout: RunLayout) -> dict:
    """Write the structure table, or reuse the one the stage's record vouches for."""
    logger = get_run_logger()
    if layout.structures.exists():
        frame = read_structures(layout.structures, columns=["split"])
        logger.info("fetch: reusing %s (%d structures)", layout.structures, len(frame))
        return {"path": str(layout.structures), "n_structures": len(frame), "reused": True}

    result = load_source(source)
    layout.stage_dir("fetch").mkdir(parents=True, exist_ok=True)
    result.rejected.to_parquet(layout.fetch_rejected, index=False)
    reasons = Counter(str(r).split(":")[0] for r in result.rejected["reason"]).most_common(3)
    if result.structures.empty:  # nothing to train on: say why now, not as an empty dataset two stages later
        why = (f"none of its {len(result.rejected)} rows could be read ({'; '.join(f'{n}x {r}' for r, n in reasons)}); "
               f"each row's reason is in {layout.fetch_rejected}" if len(result.rejected)
               else f"it has no rows in --splits {','.join(source.splits)}" if source.splits else "it has no rows")
        raise UserInputError(f"--source {source.name}: {why}")
    write_structures(result.structures, layout.structures)
    layout.fetch_source.write_text(json.dumps(source.model_dump(mode="json"), indent=1))
    counts = result.structures["split"].value_counts().to_dict()
    logger.info("fetch: %d structures %s -> %s", len(result.structures), counts, layout.structures)
    if len(result.rejected):
        logger.warning("fetch: %d rows rejected (%s), each with its id and reason in %s", len(result.rejected),
                       "; ".join(f"{n}x {r}" for r, n in reasons), layout.fetch_rejected)
    create_markdown_artifact(
        key=artifact_key(layout.campaign, "fetch"),
        markdown=f"### Fetched structures\n\n* source: `{source.kind}:{source.name}`\n* structures: {len(result.structures)} "
        f"({', '.join(f'{k}: {v}' for k, v in counts.items())})\n* rejected: {len(result.rejected)} "
        f"({'; '.join(f'{n}x {r}' for r, n in reasons) or 'none'})\n* table: `{layout.structures}`\n",
        description="fetch stage summary",
    )
    return {"path": str(layout.structures), "n_structures": len(result.structures), "n_rejected": len(result.rejected),
            "splits": counts, "reused": False}
