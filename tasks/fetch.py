"""Fetch stage: load a dataset source into `<campaign>/fetch/structures.parquet` (+ rejected.parquet)."""

from __future__ import annotations

import json

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from unimat_core.datasets.materials_project import MaterialsProjectError
from unimat_core.datasets.source import DatasetSource, load_source
from unimat_core.run_layout import RunLayout
from unimat_core.structure_table import read_structures, write_structures


def _retry_on_network_error(task, task_run, state) -> bool:
    """Retry transient network failures only; a missing key or bad input will not heal."""
    try:
        state.result()
    except MaterialsProjectError:
        return False
    except (ConnectionError, TimeoutError, OSError):
        return True
    except Exception:
        return False
    return False


@task(name="fetch-structures", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_on_network_error)
def fetch_structures(source: DatasetSource, layout: RunLayout) -> dict:
    """Write the structure table; reuse it when the same source was already fetched."""
    logger = get_run_logger()
    marker = layout.stage_dir("fetch") / "source.json"
    wanted = source.model_dump(mode="json")
    if layout.structures.exists() and marker.exists() and json.loads(marker.read_text()) == wanted:
        frame = read_structures(layout.structures, columns=["split"])
        logger.info("fetch: reusing %s (%d structures)", layout.structures, len(frame))
        return {"path": str(layout.structures), "n_structures": len(frame), "reused": True}

    result = load_source(source)
    write_structures(result.structures, layout.structures)
    result.rejected.to_parquet(layout.fetch_rejected, index=False)
    marker.write_text(json.dumps(wanted, indent=1))
    counts = result.structures["split"].value_counts().to_dict()
    logger.info("fetch: %d structures %s, %d rejected -> %s", len(result.structures), counts, len(result.rejected), layout.structures)
    create_markdown_artifact(
        key=f"{layout.campaign}-fetch".lower().replace("_", "-").replace(".", "-"),
        markdown=f"### Fetched structures\n\n* source: `{source.kind}:{source.name}`\n* structures: {len(result.structures)} "
        f"({', '.join(f'{k}: {v}' for k, v in counts.items())})\n* rejected: {len(result.rejected)}\n* table: `{layout.structures}`\n",
        description="fetch stage summary",
    )
    return {"path": str(layout.structures), "n_structures": len(result.structures), "n_rejected": len(result.rejected),
            "splits": counts, "reused": False}
