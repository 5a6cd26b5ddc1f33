"""One round of a campaign run in rounds (`unimat campaign --round next|N`, the scheduled `weekly` deployment).

Under the campaign's lock (two rounds of one campaign never run at once): the shared stages (fetch,
tensorize, train) resume or are reused as they are; a fine-tune on earlier rounds' finds (optional);
the round's plan (seed and targets, unimat_core.rounds); generate, relax, score and evaluate in
`<campaign>/round-NNNN/`; then the round's new crystals join `<campaign>/discoveries.parquet`.
A round killed part way resumes with `--round N`: its plan, parts and chunks are reused, other rounds
are not touched.
"""

from __future__ import annotations

import json
import time

from prefect import flow, get_run_logger

from flows.params import CampaignParams, GenerateParams, RunParams
from flows.preflight import check_compositions, tensor_spec
from flows.stages import (begin_stage, evaluate_flow, fetch_flow, generate_flow, relax_flow, score_flow,
                          tensorize_flow, train_flow, upstream)
from tasks.campaign_summary import publish_campaign_summary
from tasks.rounds import finetune_data, plan_round_targets, update_discoveries
from tasks.score import summarize_sun
from tasks.train import train_model
from unimat_core import atomic
from unimat_core.campaign_lock import campaign_lock
from unimat_core.provenance import StageRecord, checkpoint_identity, read_record, update_about
from unimat_core.rounds import resolve_round, round_seed
from unimat_core.run_layout import FINETUNE, STAGES, RunLayout
from unimat_core.tensor_store import training_split_of


def _status(layout: RunLayout, status: str, **extra: object) -> None:
    atomic.write_text(layout.round_status, json.dumps({"round": layout.round, "status": status, "updated":
                                                       time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra},
                                                      indent=1, default=str))


def _unfinished(base: RunLayout, before: int) -> list[int]:
    done = []
    for number in base.rounds():
        path = base.for_round(number).round_status
        if number < before and (not path.exists() or json.loads(path.read_text()).get("status") != "done"):
            done.append(number)
    return done


def _model_is_trained(layout: RunLayout, params: CampaignParams) -> bool:
    """The shared model exists, finished, from these settings and data: a round reuses it as it is (a time-limited
    training is not resumed for more steps at every round)."""
    record = read_record(layout, "train")
    wanted = StageRecord("train", params.train.settings(), upstream(layout, "tensorize"))
    return record is not None and layout.train_checkpoint.exists() and "stopped_by" in record.about \
        and record.fingerprint == wanted.fingerprint


def _base_model(layout: RunLayout) -> str:
    """The model round N starts from: round N-1's fine-tuned model, else the campaign's trained model."""
    for number in range(layout.round - 1, 0, -1):
        earlier = layout.for_round(number).finetune_checkpoint
        if earlier.exists():
            return str(earlier)
    return str(layout.train_checkpoint)


def _finetune(run: RunParams, layout: RunLayout, params: CampaignParams) -> dict:
    """Fine-tune the previous round's model briefly on earlier finds within the cutoff (+ replayed training data)."""
    rounds = params.rounds
    base = _base_model(layout)
    data = finetune_data(layout, rounds.finetune_cutoff, training_split_of(layout), params.train.seed + layout.round,
                         base, rounds.finetune_max_loss_ratio)
    if not data["n_finds"]:
        get_run_logger().info("round %d: no find within %g eV/atom of the hull yet: no fine-tune", layout.round,
                              rounds.finetune_cutoff)
        return {"skipped": "no finds", "model": base}
    settings = {"steps": rounds.finetune_steps, "learning_rate": rounds.finetune_lr, "cutoff": rounds.finetune_cutoff,
                "max_loss_ratio": rounds.finetune_max_loss_ratio}
    begin_stage(run, FINETUNE, settings, {"base": checkpoint_identity(base)[0], "finds": str(data["n_rows"])})
    config = params.train.model_copy(update={
        "init_from": base, "max_steps": rounds.finetune_steps, "max_minutes": None, "learning_rate": rounds.finetune_lr,
        "lr_decay_steps": None, "split": "train", "batch_size": min(params.train.batch_size, data["n_rows"]),
        "composition_prior": False, "checkpoint_every": rounds.finetune_steps,
        "warmup_steps": max(1, rounds.finetune_steps // 10),  # a fresh Adam's first steps move every weight by ~lr
        # the sampling (EMA) weights average over the fine-tune's last third: at the campaign's 0.999, which
        # continues the base model's average, 60 steps would move them by 6 % and the round would sample the base
        "ema_decay": 1 - 3 / max(4, rounds.finetune_steps),
        "log_every": 1})  # every step: the curve shows whether it starts from what the model knows
    summary = train_model(layout, config, dataset=data["dataset"], out_dir=str(layout.stage_dir(FINETUNE)))
    forms = {k: data[k] for k in ("n_as_relaxed", "n_as_sample", "n_left_out", "reference_loss")}
    update_about(layout, FINETUNE, step=summary["step"], n_finds=data["n_finds"], **forms)
    return {**summary, "n_finds": data["n_finds"], **forms, "model": str(layout.finetune_checkpoint), "base": base}


@flow(name="campaign-round", log_prints=True)
def campaign_round(params: CampaignParams) -> dict:
    """Run (or resume) one round; see the module docstring."""
    base = params.run.layout()
    rounds = params.rounds
    logger = get_run_logger()
    with campaign_lock(base.campaign_lock, f"a round of campaign {base.campaign!r}", wait_s=rounds.wait_lock,
                       log=logger.warning):
        number = resolve_round(rounds.round, base.rounds())
        unfinished = _unfinished(base, number)
        if unfinished and rounds.round == "next":
            logger.warning("round(s) %s of %r did not finish; resume with --round %d", unfinished, base.campaign,
                           unfinished[-1])
        run = params.run.model_copy(update={"round": number})
        layout = run.layout()
        seed = round_seed(params.generate.seed, number)
        _status(layout, "running", seed=seed)
        results: dict = {"campaign": base.campaign, "round": number, "run_dir": str(layout.round_dir()), "seconds": {}}
        planned = STAGES[: STAGES.index(params.stop_after) + 1]

        def timed(name: str, step) -> None:
            start = time.perf_counter()
            results[name] = step()
            results["seconds"][name] = round(time.perf_counter() - start, 1)

        timed("fetch", lambda: fetch_flow(run, params.source))
        if "tensorize" in planned:
            timed("tensorize", lambda: tensorize_flow(run, params.tensorize))
        if "train" in planned:
            if params.generate.compositions and not rounds.targets:
                check_compositions(params.generate.compositions, tensor_spec(layout), "tensorized data")
            trained = _model_is_trained(layout, params)
            timed("train", lambda: {"reused": True, **read_record(layout, "train").about} if trained
                  else train_flow(run, params.train))
        if "generate" in planned:
            model = str(layout.train_checkpoint)
            if rounds.finetune and number > 1:
                timed("finetune", lambda: _finetune(run, layout, params))
                model = results["finetune"]["model"]
            policy = {"samples": rounds.samples, "targets": rounds.targets or params.generate.compositions,
                      "explore": rounds.explore, "exploit": rounds.exploit, "exploit_top": rounds.exploit_top}
            plan = plan_round_targets(layout, policy, seed, str(layout.train_checkpoint))
            results["plan"] = {"seed": plan["seed"], "shares": plan["shares"], "n_skipped": len(plan["skipped"])}
            generate = GenerateParams(**{**params.generate.model_dump(), "compositions": tuple(plan["targets"]),
                                         "samples_per_composition": 1, "num_samples": len(plan["targets"]),
                                         "seed": plan["seed"], "model": model})
            timed("generate", lambda: generate_flow(run, generate))
        if "relax" in planned:
            timed("relax", lambda: relax_flow(run, params.relax))
        if "score" in planned:
            timed("score", lambda: score_flow(run, params.relax, params.score))
        if "evaluate" in planned:
            timed("evaluate", lambda: evaluate_flow(run, params.evaluate))
        if "evaluate" in results and "sun" in (results.get("score") or {}):
            results["sun"] = summarize_sun(layout, params.score.use_metastable)
        if "sun" in (results.get("score") or {}):
            timed("discoveries", lambda: update_discoveries(layout, [str(layout.structures)],
                                                           results["generate"]["n_generated"],
                                                           params.score.use_metastable))
        _status(layout, "done", seed=seed, stop_after=params.stop_after,
                discoveries={k: v for k, v in (results.get("discoveries") or {}).items() if k != "path"})
        publish_campaign_summary(layout, results)
        return results
