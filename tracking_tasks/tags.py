"""Every tag key the library writes or reads, and the run-naming rule.

A tag key is spelled here once; every module that writes or filters on a tag imports
it from here. Keys fall in four families (plus the Optuna attribute keys at the end):

- the stage tag ``stage`` (what the seed's filters ``tags.stage='hpo'`` expect), set by
  every stage tracker and read by ``find_run_by_config_hash(..., stage=...)``; its value
  is the tracker's stage name (``STAGES``), or the seed's (``SEED_STAGE_NAMES``) for the
  seed-named tracker classes, or any name given as ``stage=``;
- ``tracking_tasks.*``: the library's own bookkeeping (config hash, run identity,
  lineage, a sweep's best trial, a logged model's identity and why it failed, an alias
  promotion's decision);
- ``prefect.*``: the Prefect API, flow run, flow, deployment and task run a run was
  opened under, and the Prefect state that ended it;
- MLflow's own ``mlflow.parentRunId``, which nests a run under its parent in the UI.
"""

from __future__ import annotations

import uuid

__all__ = [
    "BEST_RUN_TAG",
    "BEST_TRIAL_TAG",
    "CONFIG_HASH_TAG",
    "DEPLOYMENT_ID_TAG",
    "DEPLOYMENT_NAME_TAG",
    "FINAL_STATE_TAG",
    "FLOW_NAME_TAG",
    "FLOW_RUN_NAME_TAG",
    "FLOW_RUN_TAG",
    "GROUP_TAG",
    "IDENTITY_TAG",
    "INTERRUPTED_ATTR",
    "LINEAGE_TAG_PREFIX",
    "MACHINE_TAG_PREFIX",
    "MODEL_FAILURE_TAG",
    "MODEL_IDENTITY_TAG",
    "PARENT_RUN_TAG",
    "PREFECT_API_TAG",
    "PROMOTION_TAG_PREFIX",
    "PRUNED_TAG",
    "RECONCILED_TAG",
    "RECONCILE_OVERRULED_TAG",
    "REFIT_COMPLETED_TAG",
    "SEED_STAGE_NAMES",
    "STAGES",
    "STAGE_TAG",
    "STUDY_TAG",
    "SWEEP_RUN_ATTR",
    "TASK_RUN_TAG",
    "TRIAL_CHECKPOINT_ATTR",
    "TRIAL_INDEX_TAG",
    "TRIAL_RUN_ATTR",
    "lineage_tag",
    "parse_flow_run_id",
    "promotion_tag",
    "stage_run_name",
    "trial_run_name",
]

#: The stage a run belongs to: ``sweep``, ``sweep-trial``, ``training``, ``benchmark``,
#: ``conversion`` (or any stage name a user gives).
STAGE_TAG = "stage"
#: The stage names the trackers write.
STAGES = ("sweep", "sweep-trial", "training", "benchmark", "conversion")
#: The stage names the seed-named tracker classes (``MLflowSweepTracker``...) write by
#: default, where the seed's differ from ``STAGES``: the seed's filters say
#: ``tags.stage='hpo'``. Any tracker takes ``stage=`` to write another name.
SEED_STAGE_NAMES = {"sweep": "hpo", "sweep-trial": "hpo-trial"}

#: ``config_hash`` of the config a run was created for (64 hex digits).
CONFIG_HASH_TAG = "tracking_tasks.config_hash"
#: A run's identity inside its flow run; a retry finds its run again by it.
IDENTITY_TAG = "tracking_tasks.run_identity"
#: ``tracking_tasks.lineage.<role>``: the run a stage came from (sweep, trial, model...).
LINEAGE_TAG_PREFIX = "tracking_tasks.lineage."
#: On a sweep's run: the run id of its best trial.
BEST_RUN_TAG = "tracking_tasks.best_run_id"
#: On a sweep's run: the index of its best trial.
BEST_TRIAL_TAG = "tracking_tasks.best_trial"
#: On a trial's run: its index in the sweep (an Optuna sweep: the trial's ``number``).
TRIAL_INDEX_TAG = "tracking_tasks.trial_index"
#: On a pruned trial's run (ended KILLED): ``true``.
PRUNED_TAG = "tracking_tasks.pruned"
#: On a run ``reconcile_runs`` ended because its Prefect flow run was over (or gone) but
#: the run was still RUNNING: why, e.g. ``flow run Crashed`` or ``flow run not found``.
RECONCILED_TAG = "tracking_tasks.reconciled"
#: On a run whose status its own flow run's hooks wrote after reconcile had ended it (a
#: flow run marked Crashed while its process lived, or retried): the reason reconcile
#: had tagged, kept for the record (``tracking_tasks.reconciled`` itself is removed).
RECONCILE_OVERRULED_TAG = "tracking_tasks.reconcile_overruled"
#: On an Optuna sweep's run: the study's name.
STUDY_TAG = "tracking_tasks.optuna_study"
#: On a run a refit checkpoint went to: ``true`` or ``false`` (the seed's ``refit_ok``).
REFIT_COMPLETED_TAG = "tracking_tasks.refit_completed"
#: A group of runs the caller names (the seed's ``group_id``: runs of one pipeline
#: invocation, say); find them with ``tags.`tracking_tasks.group_id` = '<id>'``.
GROUP_TAG = "tracking_tasks.group_id"
#: On a ``LoggedModel``: its identity (source run, name, step, params, model type); a
#: retried task or flow run finds the model it already made by it.
MODEL_IDENTITY_TAG = "tracking_tasks.model_identity"
#: On a ``LoggedModel`` finalised FAILED: why (MLflow's finalize call has no message).
MODEL_FAILURE_TAG = "tracking_tasks.failure_reason"
#: ``tracking_tasks.promotion.<alias>``: on the run that asked, what ``promote_model``
#: decided about moving the alias, and why.
PROMOTION_TAG_PREFIX = "tracking_tasks.promotion."
#: ``machine.*``: where a benchmark ran (python, platform, cpu_count, processor).
MACHINE_TAG_PREFIX = "machine."

#: The Prefect flow run a run was opened under (a UUID).
FLOW_RUN_TAG = "prefect.flow_run_id"
#: The Prefect flow run's name.
FLOW_RUN_NAME_TAG = "prefect.flow_run_name"
#: The Prefect flow's name.
FLOW_NAME_TAG = "prefect.flow_name"
#: The Prefect deployment of the top-level flow run, when there is one.
DEPLOYMENT_ID_TAG = "prefect.deployment_id"
#: That deployment's name.
DEPLOYMENT_NAME_TAG = "prefect.deployment_name"
#: The Prefect task run that opened the run.
TASK_RUN_TAG = "prefect.task_run_id"
#: The Prefect state that ended the run (``Completed``, ``Failed``, ``Crashed``...).
FINAL_STATE_TAG = "prefect.final_state"
#: The Prefect API the run's flow run lives in, secret-free: ``prefect-cloud:<account
#: id>/<workspace id>`` for Prefect Cloud, ``prefect-db:<id>`` for a Prefect server or
#: the temporary API (the id of its database, the same through every URL and process
#: that reaches it). Reconcile ends only runs whose value is its own API's.
PREFECT_API_TAG = "prefect.api"

#: MLflow's own parent tag: the UI nests a run under this run id.
PARENT_RUN_TAG = "mlflow.parentRunId"

# Optuna attributes (kept in the study's storage, not in MLflow), so a resumed study
# finds its MLflow runs again.

#: Study user attribute: the sweep's MLflow run (JSON: tracking URI, experiment, run id).
SWEEP_RUN_ATTR = "tracking_tasks.sweep_run"
#: Trial user attribute: the trial's MLflow run id.
TRIAL_RUN_ATTR = "tracking_tasks.mlflow_run_id"
#: Trial user attribute: the local checkpoint the objective returned, if any.
TRIAL_CHECKPOINT_ATTR = "tracking_tasks.checkpoint"
#: Study user attribute: the numbers of trials an attempt that died left RUNNING, failed
#: on resume (their params are asked again); they do not count toward ``n_trials``.
INTERRUPTED_ATTR = "tracking_tasks.interrupted"


def lineage_tag(role: str) -> str:
    """Return the tag key that names the run a stage came from in ``role``.

    Args:
        role: ``sweep``, ``trial``, ``model``, ``source``...

    Returns:
        ``tracking_tasks.lineage.<role>``.

    Example:
        >>> lineage_tag("sweep")
        'tracking_tasks.lineage.sweep'
    """
    return f"{LINEAGE_TAG_PREFIX}{role}"


def promotion_tag(alias: str) -> str:
    """Return the run tag key that records a promotion decision for ``alias``.

    Args:
        alias: The registry alias, e.g. ``champion``.

    Returns:
        ``tracking_tasks.promotion.<alias>``.

    Example:
        >>> promotion_tag("champion")
        'tracking_tasks.promotion.champion'
    """
    return f"{PROMOTION_TAG_PREFIX}{alias}"


def stage_run_name(stage: str, name: str | None = None) -> str:
    """Return the run name a stage tracker gives its run: ``name``, else the stage.

    Args:
        stage: The stage (``training``, ``benchmark``...).
        name: A name the caller chose, if any.

    Returns:
        The run name.

    Example:
        >>> stage_run_name("training"), stage_run_name("training", "bert-base")
        ('training', 'bert-base')
    """
    return name if name else stage


def trial_run_name(index: int, prefix: str = "trial") -> str:
    """Return the run name of a sweep's trial: ``<prefix>-<index>``.

    Args:
        index: The trial's number (Optuna's ``trial.number``, or its list position).
        prefix: The name's prefix.

    Returns:
        The run name, e.g. ``trial-3``.

    Example:
        >>> trial_run_name(3)
        'trial-3'
    """
    return f"{prefix}-{index}"


def parse_flow_run_id(value: object) -> str | None:
    """A Prefect flow-run id in its canonical form, or None if ``value`` is not a UUID.

    The one reading of a ``FLOW_RUN_TAG`` value (reconcile) and of a ``flow_run_id``
    argument (the flow-run finders, which refuse None).

    Args:
        value: A flow-run id, in any case, with or without dashes, or anything else.

    Returns:
        The lower-case dashed UUID, or None.

    Example:
        >>> parse_flow_run_id("6B29FC40-CA47-1067-B31D-00DD010662DA")
        '6b29fc40-ca47-1067-b31d-00dd010662da'
    """
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None
