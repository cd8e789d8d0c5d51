"""In-memory Personalize: resources, their status progression, and what each operation does.

Every handler takes the request as parsed JSON (already checked against the model) and returns the
response as wire JSON (timestamps as epoch seconds), or raises ServiceError with a code the operation
declares. Callers hold `Personalize.lock`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from . import s3data
from .recommender import CooccurrenceModel, Event, histories, offline_metrics

PENDING = "CREATE PENDING"
IN_PROGRESS = "CREATE IN_PROGRESS"
ACTIVE = "ACTIVE"
FAILED = "CREATE FAILED"
TERMINAL = (ACTIVE, FAILED)

# Documented service limits that the models do not carry.
MAX_NUM_RESULTS = 500
MAX_NUM_RESULTS_WITH_METADATA = 50
MAX_RANKING_INPUT = 500
MIN_TRAINING_INTERACTIONS = 1000
MIN_TRAINING_USERS_WITH_TWO = 25
DEFAULT_NUM_RESULTS = 25
# Recipes whose solutions can be retrained with trainingMode=UPDATE.
UPDATABLE_RECIPES = ("user-personalization", "hrnn-coldstart")

FAILABLE_KINDS = ("DatasetImportJob", "SolutionVersion", "Campaign", "CampaignUpdate")


class ServiceError(Exception):
    """An error answer: `code` is the modeled error shape name (or an unmodeled AWS code)."""

    def __init__(self, code: str, message: str, rule_violation: bool = False, path: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path
        # True when the request broke a documented service rule the model cannot express (e.g.
        # numResults > 500): a client bug, so it is recorded as a violation as well as answered.
        self.rule_violation = rule_violation


def not_found(kind: str, arn: str) -> ServiceError:
    return ServiceError("ResourceNotFoundException", f"Could not find {kind} with ARN {arn}")


def invalid(message: str, rule_violation: bool = True, path: str = "") -> ServiceError:
    return ServiceError("InvalidInputException", message, rule_violation=rule_violation, path=path)


def now() -> float:
    return round(time.time(), 3)


@dataclass
class Progress:
    """CREATE PENDING → CREATE IN_PROGRESS → ACTIVE | CREATE FAILED, one step per Describe call.

    The first `pending_describes` Describe calls see the resource unfinished (first PENDING, then
    IN_PROGRESS); the next one sees the outcome. Tests stay deterministic and never sleep.
    """

    pending_describes: int
    failure_reason: str | None = None
    status: str = PENDING
    describes: int = 0
    created: float = field(default_factory=now)
    updated: float = field(default_factory=now)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def on_describe(self) -> bool:
        """Advance for one Describe call; True when this call finished the resource."""
        if self.terminal:
            return False
        if self.describes >= self.pending_describes:
            self.finish()
            return True
        if self.describes > 0 and self.status != IN_PROGRESS:
            self.status = IN_PROGRESS
            self.updated = now()
        self.describes += 1
        return False

    def finish(self) -> None:
        self.status = FAILED if self.failure_reason else ACTIVE
        self.updated = now()

    def wire(self) -> dict:
        out = {"status": self.status, "creationDateTime": self.created, "lastUpdatedDateTime": self.updated}
        if self.status == FAILED:
            out["failureReason"] = self.failure_reason
        return out


@dataclass
class DatasetGroup:
    arn: str
    name: str
    progress: Progress
    request: dict


@dataclass
class Schema:
    arn: str
    name: str
    schema: str
    domain: str | None
    created: float = field(default_factory=now)


@dataclass
class Dataset:
    arn: str
    name: str
    group_arn: str
    dataset_type: str
    schema_arn: str
    progress: Progress
    events: list[Event] = field(default_factory=list)
    # Records received through personalize-events PutUsers / PutItems, by id.
    records: dict[str, dict] = field(default_factory=dict)


@dataclass
class ImportJob:
    arn: str
    name: str
    dataset_arn: str
    request: dict
    progress: Progress
    events: list[Event] = field(default_factory=list)


@dataclass
class Solution:
    arn: str
    name: str
    group_arn: str
    request: dict
    progress: Progress


@dataclass
class SolutionVersion:
    arn: str
    name: str | None
    solution_arn: str
    training_mode: str
    progress: Progress
    model: CooccurrenceModel | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class CampaignUpdate:
    solution_version_arn: str
    min_tps: int
    config: dict
    progress: Progress


@dataclass
class Campaign:
    arn: str
    name: str
    solution_version_arn: str
    min_tps: int
    config: dict
    progress: Progress
    latest_update: CampaignUpdate | None = None


@dataclass
class Filter:
    arn: str
    name: str
    group_arn: str
    expression: str
    progress: Progress


@dataclass
class PlannedFailure:
    kind: str
    reason: str
    name: str | None = None


def _placeholders(expression: str) -> set[str]:
    return set(re.findall(r"\$([A-Za-z0-9_]+)", expression))


class Personalize:
    # Handlers that take the lock themselves, to do slow work (S3 reads) outside it.
    LOCKS_ITSELF = frozenset({"CreateDatasetImportJob"})

    def __init__(self, account: str, pending_describes: int, s3_endpoint: str | None):
        self.account = account
        self.pending_describes = pending_describes
        self.s3_endpoint = s3_endpoint
        self.groups: dict[str, DatasetGroup] = {}
        self.schemas: dict[str, Schema] = {}
        self.datasets: dict[str, Dataset] = {}
        self.import_jobs: dict[str, ImportJob] = {}
        self.solutions: dict[str, Solution] = {}
        self.versions: dict[str, SolutionVersion] = {}
        self.campaigns: dict[str, Campaign] = {}
        self.filters: dict[str, Filter] = {}
        self.planned_failures: list[PlannedFailure] = []
        # Items users interacted with through PutEvents, after training: excluded and scored like history.
        self.live_history: dict[str, list[str]] = {}
        self.lock = threading.RLock()
        self.handlers: dict[str, Callable[[dict, str], dict]] = {
            name[len("op_") :]: getattr(self, name) for name in dir(self) if name.startswith("op_")
        }

    def dispatch(self, operation: str, params: dict, region: str) -> dict:
        handler = self.handlers[operation]
        if operation in self.LOCKS_ITSELF:
            return handler(params, region)
        with self.lock:
            return handler(params, region)

    # ---- helpers -------------------------------------------------------------------------------

    def arn(self, region: str, kind: str, name: str) -> str:
        return f"arn:aws:personalize:{region}:{self.account}:{kind}/{name}"

    def progress(self, kind: str, name: str | None = None) -> Progress:
        return Progress(self.pending_describes, failure_reason=self._take_planned_failure(kind, name))

    def _take_planned_failure(self, kind: str, name: str | None) -> str | None:
        for plan in self.planned_failures:
            if plan.kind == kind and (plan.name is None or plan.name == name):
                self.planned_failures.remove(plan)
                return plan.reason
        return None

    def plan_failure(self, kind: str, reason: str, name: str | None = None, arn: str | None = None) -> dict:
        """Fail an existing unfinished resource (by ARN), or the next one created (of a name)."""
        if kind not in FAILABLE_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAILABLE_KINDS)}")
        if arn:
            progress = self._progress_of(kind, arn)
            if progress is None:
                raise ValueError(f"no {kind} with ARN {arn}")
            if progress.terminal:
                raise ValueError(f"{kind} {arn} has already finished ({progress.status})")
            progress.failure_reason = reason
            return {"applied_to": arn}
        self.planned_failures.append(PlannedFailure(kind, reason, name))
        return {"planned": {"kind": kind, "name": name, "failureReason": reason}}

    def _progress_of(self, kind: str, arn: str) -> Progress | None:
        if kind == "DatasetImportJob" and arn in self.import_jobs:
            return self.import_jobs[arn].progress
        if kind == "SolutionVersion" and arn in self.versions:
            return self.versions[arn].progress
        if kind == "Campaign" and arn in self.campaigns:
            return self.campaigns[arn].progress
        if kind == "CampaignUpdate" and arn in self.campaigns and self.campaigns[arn].latest_update:
            return self.campaigns[arn].latest_update.progress
        return None

    def advance_all(self) -> list[str]:
        """Finish every unfinished resource now; returns the ARNs finished."""
        finished = []
        for collection in (self.groups, self.datasets, self.solutions, self.filters):
            for arn, resource in collection.items():
                if not resource.progress.terminal:
                    resource.progress.finish()
                    finished.append(arn)
        for arn, job in self.import_jobs.items():
            if not job.progress.terminal:
                job.progress.finish()
                self._import_finished(job)
                finished.append(arn)
        for arn, version in self.versions.items():
            if not version.progress.terminal:
                version.progress.finish()
                finished.append(arn)
        for arn, campaign in self.campaigns.items():
            if not campaign.progress.terminal:
                campaign.progress.finish()
                finished.append(arn)
            update = campaign.latest_update
            if update and not update.progress.terminal:
                update.progress.finish()
                self._update_finished(campaign)
                finished.append(f"{arn} (update)")
        return finished

    def _lookup(self, collection: dict, kind: str, arn: str):
        try:
            return collection[arn]
        except KeyError:
            raise not_found(kind, arn) from None

    def _name_free(self, collection: dict, arn: str, kind: str, name: str) -> None:
        if arn in collection:
            raise ServiceError("ResourceAlreadyExistsException", f"A {kind} with the name {name} already exists")

    @staticmethod
    def _page(items: list, params: dict, key: str) -> dict:
        start = 0
        token = params.get("nextToken")
        if token is not None:
            try:
                start = int(base64.b64decode(token, validate=True).decode())
            except (ValueError, UnicodeDecodeError):
                raise ServiceError("InvalidNextTokenException", "The nextToken is not valid") from None
            if start < 0 or start > len(items):
                raise ServiceError("InvalidNextTokenException", "The nextToken is not valid")
        size = params.get("maxResults", 100)
        out = {key: items[start : start + size]}
        if start + size < len(items):
            out["nextToken"] = base64.b64encode(str(start + size).encode()).decode()
        return out

    # ---- dataset groups, schemas, datasets ---------------------------------------------------------

    def op_CreateDatasetGroup(self, params: dict, region: str) -> dict:
        name = params["name"]
        arn = self.arn(region, "dataset-group", name)
        self._name_free(self.groups, arn, "dataset group", name)
        self.groups[arn] = DatasetGroup(arn, name, self.progress("DatasetGroup"), params)
        return {"datasetGroupArn": arn}

    def op_DescribeDatasetGroup(self, params: dict, region: str) -> dict:
        group = self._lookup(self.groups, "dataset group", params["datasetGroupArn"])
        group.progress.on_describe()
        out = {"name": group.name, "datasetGroupArn": group.arn, **group.progress.wire()}
        for key in ("roleArn", "kmsKeyArn", "domain"):
            if key in group.request:
                out[key] = group.request[key]
        return {"datasetGroup": out}

    def op_CreateSchema(self, params: dict, region: str) -> dict:
        name = params["name"]
        arn = self.arn(region, "schema", name)
        self._name_free(self.schemas, arn, "schema", name)
        try:
            schema = json.loads(params["schema"])
        except json.JSONDecodeError as err:
            raise invalid(f"The schema is not valid JSON: {err}") from None
        if not isinstance(schema, dict) or schema.get("type") != "record" or not isinstance(schema.get("fields"), list):
            raise invalid("The schema must be an Avro record with a list of fields")
        self.schemas[arn] = Schema(arn, name, params["schema"], params.get("domain"))
        return {"schemaArn": arn}

    def op_DescribeSchema(self, params: dict, region: str) -> dict:
        schema = self._lookup(self.schemas, "schema", params["schemaArn"])
        out = {
            "name": schema.name,
            "schemaArn": schema.arn,
            "schema": schema.schema,
            "creationDateTime": schema.created,
            "lastUpdatedDateTime": schema.created,
        }
        if schema.domain:
            out["domain"] = schema.domain
        return {"schema": out}

    def op_CreateDataset(self, params: dict, region: str) -> dict:
        group = self._lookup(self.groups, "dataset group", params["datasetGroupArn"])
        self._lookup(self.schemas, "schema", params["schemaArn"])
        dataset_type = params["datasetType"].upper()
        if dataset_type not in ("INTERACTIONS", "ITEMS", "USERS", "ACTIONS", "ACTION_INTERACTIONS"):
            raise invalid(f"Unknown datasetType {params['datasetType']}")
        arn = self.arn(region, "dataset", f"{group.name}/{dataset_type}")
        if arn in self.datasets:
            raise ServiceError(
                "ResourceAlreadyExistsException",
                f"The dataset group {group.name} already has a dataset of type {dataset_type}",
            )
        self.datasets[arn] = Dataset(
            arn, params["name"], group.arn, dataset_type, params["schemaArn"], self.progress("Dataset")
        )
        return {"datasetArn": arn}

    def op_DescribeDataset(self, params: dict, region: str) -> dict:
        dataset = self._lookup(self.datasets, "dataset", params["datasetArn"])
        dataset.progress.on_describe()
        return {
            "dataset": {
                "name": dataset.name,
                "datasetArn": dataset.arn,
                "datasetGroupArn": dataset.group_arn,
                "datasetType": dataset.dataset_type,
                "schemaArn": dataset.schema_arn,
                **{k: v for k, v in dataset.progress.wire().items() if k != "failureReason"},
            }
        }

    # ---- dataset import jobs -----------------------------------------------------------------------

    def create_import_job(self, params: dict, region: str) -> ImportJob:
        """First half of CreateDatasetImportJob, under the lock: checks and reserves the name."""
        name = params["jobName"]
        arn = self.arn(region, "dataset-import-job", name)
        # Import-job names are unique per account and region, whatever the dataset: the same name
        # twice is ResourceAlreadyExistsException, which is how a resumed pipeline finds its job.
        self._name_free(self.import_jobs, arn, "dataset import job", name)
        dataset = self._lookup(self.datasets, "dataset", params["datasetArn"])
        for job in self.import_jobs.values():
            if job.dataset_arn == dataset.arn and not job.progress.terminal:
                raise ServiceError(
                    "ResourceInUseException",
                    f"The dataset {dataset.arn} has a dataset import job in progress: {job.arn}",
                )
        data_location = params.get("dataSource", {}).get("dataLocation")
        if not data_location:
            raise invalid("dataSource.dataLocation is required")
        job = ImportJob(arn, name, dataset.arn, params, self.progress("DatasetImportJob", name))
        self.import_jobs[arn] = job
        return job

    def op_CreateDatasetImportJob(self, params: dict, region: str) -> dict:
        with self.lock:
            job = self.create_import_job(params, region)
        # Read and check the CSV without the lock, so a slow S3 never stalls the runtime API. The
        # outcome shows when the job finishes, as with the real service.
        try:
            imported = s3data.read_import(job.request["dataSource"]["dataLocation"], self.s3_endpoint, region)
            failure = None
        except s3data.ImportFailed as err:
            imported, failure = None, str(err)
        with self.lock:
            if failure is not None:
                if job.progress.failure_reason is None:
                    job.progress.failure_reason = failure
            else:
                job.events = imported.events
        return {"datasetImportJobArn": job.arn}

    def _import_finished(self, job: ImportJob) -> None:
        if job.progress.status != ACTIVE:
            return
        dataset = self.datasets[job.dataset_arn]
        if job.request.get("importMode", "FULL") == "FULL":
            dataset.events = list(job.events)
        else:
            dataset.events.extend(job.events)

    def op_DescribeDatasetImportJob(self, params: dict, region: str) -> dict:
        job = self._lookup(self.import_jobs, "dataset import job", params["datasetImportJobArn"])
        if job.progress.on_describe():
            self._import_finished(job)
        out = {
            "jobName": job.name,
            "datasetImportJobArn": job.arn,
            "datasetArn": job.dataset_arn,
            "dataSource": {"dataLocation": job.request["dataSource"]["dataLocation"]},
            "importMode": job.request.get("importMode", "FULL"),
            "publishAttributionMetricsToS3": job.request.get("publishAttributionMetricsToS3", False),
            **job.progress.wire(),
        }
        if "roleArn" in job.request:
            out["roleArn"] = job.request["roleArn"]
        return {"datasetImportJob": out}

    def op_ListDatasetImportJobs(self, params: dict, region: str) -> dict:
        dataset_arn = params.get("datasetArn")
        if dataset_arn is not None and dataset_arn not in self.datasets:
            raise invalid(f"Could not find dataset with ARN {dataset_arn}", rule_violation=False)
        jobs = [j for j in self.import_jobs.values() if dataset_arn is None or j.dataset_arn == dataset_arn]
        jobs.sort(key=lambda j: (-j.progress.created, j.arn))
        summaries = [
            {
                "datasetImportJobArn": j.arn,
                "jobName": j.name,
                "importMode": j.request.get("importMode", "FULL"),
                **j.progress.wire(),
            }
            for j in jobs
        ]
        return self._page(summaries, params, "datasetImportJobs")

    # ---- solutions and versions --------------------------------------------------------------------

    def op_CreateSolution(self, params: dict, region: str) -> dict:
        name = params["name"]
        arn = self.arn(region, "solution", name)
        self._name_free(self.solutions, arn, "solution", name)
        self._lookup(self.groups, "dataset group", params["datasetGroupArn"])
        self.solutions[arn] = Solution(arn, name, params["datasetGroupArn"], params, self.progress("Solution"))
        return {"solutionArn": arn}

    def _version_summary(self, version: SolutionVersion) -> dict:
        return {
            "solutionVersionArn": version.arn,
            "trainingMode": version.training_mode,
            "trainingType": "MANUAL",
            **version.progress.wire(),
        }

    def op_DescribeSolution(self, params: dict, region: str) -> dict:
        solution = self._lookup(self.solutions, "solution", params["solutionArn"])
        solution.progress.on_describe()
        out = {
            "name": solution.name,
            "solutionArn": solution.arn,
            "datasetGroupArn": solution.group_arn,
            "performHPO": solution.request.get("performHPO", False),
            "performAutoML": solution.request.get("performAutoML", False),
            **{k: v for k, v in solution.progress.wire().items() if k != "failureReason"},
        }
        for key in ("recipeArn", "eventType", "solutionConfig"):
            if key in solution.request:
                out[key] = solution.request[key]
        versions = [v for v in self.versions.values() if v.solution_arn == solution.arn]
        if versions:
            out["latestSolutionVersion"] = self._version_summary(max(versions, key=lambda v: v.progress.created))
        return {"solution": out}

    def op_CreateSolutionVersion(self, params: dict, region: str) -> dict:
        solution = self._lookup(self.solutions, "solution", params["solutionArn"])
        name = params.get("name")
        if name is not None:
            # The model declares ResourceAlreadyExistsException for this operation: a solution version
            # name is unique within its solution, so a retried step can find its version by name.
            for version in self.versions.values():
                if version.solution_arn == solution.arn and version.name == name:
                    # Like the real message, this one does not carry the existing version's ARN:
                    # a resumed client finds it with ListSolutionVersions + DescribeSolutionVersion.
                    raise ServiceError(
                        "ResourceAlreadyExistsException",
                        f"A solution version with the name {name} already exists in solution {solution.arn}",
                    )
        if solution.progress.status != ACTIVE:
            raise ServiceError(
                "ResourceInUseException",
                f"The solution {solution.arn} is {solution.progress.status}; it must be ACTIVE",
            )
        training_mode = params.get("trainingMode", "FULL")
        recipe = solution.request.get("recipeArn", "")
        if training_mode == "UPDATE":
            if not any(r in recipe for r in UPDATABLE_RECIPES):
                raise invalid(
                    "trainingMode UPDATE is only supported for User-Personalization solutions, "
                    f"not {recipe or 'no recipe'}"
                )
            if not any(
                v.solution_arn == solution.arn and v.training_mode == "FULL" and v.progress.status == ACTIVE
                for v in self.versions.values()
            ):
                raise invalid("trainingMode UPDATE needs an ACTIVE solution version trained with FULL")
        arn = f"{solution.arn}/{uuid.uuid4().hex[:8]}"
        version = SolutionVersion(arn, name, solution.arn, training_mode, self.progress("SolutionVersion", name))
        self._train(version, solution)
        self.versions[arn] = version
        return {"solutionVersionArn": arn}

    def _train(self, version: SolutionVersion, solution: Solution) -> None:
        """Fit now on the data imported so far; the outcome shows when the version finishes."""
        events = [
            e
            for d in self.datasets.values()
            if d.group_arn == solution.group_arn and d.dataset_type == "INTERACTIONS"
            for e in d.events
        ]
        event_type = solution.request.get("eventType")
        if event_type:
            events = [e for e in events if e.event_type == event_type]
        user_histories = histories(events)
        users_with_two = sum(1 for items in user_histories.values() if len(items) >= 2)
        if len(events) < MIN_TRAINING_INTERACTIONS or users_with_two < MIN_TRAINING_USERS_WITH_TWO:
            if version.progress.failure_reason is None:
                version.progress.failure_reason = (
                    f"Insufficient data for training: found {len(events)} interactions and "
                    f"{users_with_two} users with at least 2 interactions; at least "
                    f"{MIN_TRAINING_INTERACTIONS} interactions and {MIN_TRAINING_USERS_WITH_TWO} users "
                    f"with at least 2 interactions are required."
                )
            return
        version.model = CooccurrenceModel(user_histories)
        version.metrics = offline_metrics(user_histories)

    def op_DescribeSolutionVersion(self, params: dict, region: str) -> dict:
        version = self._lookup(self.versions, "solution version", params["solutionVersionArn"])
        version.progress.on_describe()
        solution = self.solutions[version.solution_arn]
        out = {
            "solutionVersionArn": version.arn,
            "solutionArn": solution.arn,
            "datasetGroupArn": solution.group_arn,
            "performHPO": solution.request.get("performHPO", False),
            "performAutoML": solution.request.get("performAutoML", False),
            "trainingMode": version.training_mode,
            "trainingType": "MANUAL",
            **version.progress.wire(),
        }
        if version.name is not None:
            out["name"] = version.name
        for key in ("recipeArn", "eventType", "solutionConfig"):
            if key in solution.request:
                out[key] = solution.request[key]
        if version.progress.status == ACTIVE:
            out["trainingHours"] = 0.25
        return {"solutionVersion": out}

    def op_ListSolutionVersions(self, params: dict, region: str) -> dict:
        solution_arn = params.get("solutionArn")
        if solution_arn is not None:
            self._lookup(self.solutions, "solution", solution_arn)
        versions = [v for v in self.versions.values() if solution_arn is None or v.solution_arn == solution_arn]
        versions.sort(key=lambda v: (-v.progress.created, v.arn))
        return self._page([self._version_summary(v) for v in versions], params, "solutionVersions")

    def op_GetSolutionMetrics(self, params: dict, region: str) -> dict:
        version = self._lookup(self.versions, "solution version", params["solutionVersionArn"])
        if version.progress.status != ACTIVE:
            raise ServiceError(
                "ResourceInUseException",
                f"The solution version {version.arn} is {version.progress.status}; metrics exist once it is ACTIVE",
            )
        return {"solutionVersionArn": version.arn, "metrics": dict(version.metrics)}

    # ---- campaigns ---------------------------------------------------------------------------------

    def _resolve_version(self, arn: str) -> SolutionVersion:
        if arn.endswith("/$LATEST"):
            solution_arn = arn[: -len("/$LATEST")]
            self._lookup(self.solutions, "solution", solution_arn)
            active = [
                v for v in self.versions.values() if v.solution_arn == solution_arn and v.progress.status == ACTIVE
            ]
            if not active:
                raise ServiceError("ResourceInUseException", f"The solution {solution_arn} has no ACTIVE version")
            return max(active, key=lambda v: v.progress.created)
        version = self._lookup(self.versions, "solution version", arn)
        if version.progress.status != ACTIVE:
            raise ServiceError(
                "ResourceInUseException",
                f"The solution version {arn} is {version.progress.status}; it must be ACTIVE",
            )
        return version

    def op_CreateCampaign(self, params: dict, region: str) -> dict:
        name = params["name"]
        arn = self.arn(region, "campaign", name)
        self._name_free(self.campaigns, arn, "campaign", name)
        version = self._resolve_version(params["solutionVersionArn"])
        self.campaigns[arn] = Campaign(
            arn,
            name,
            version.arn,
            params.get("minProvisionedTPS", 1),
            params.get("campaignConfig", {}),
            self.progress("Campaign", name),
        )
        return {"campaignArn": arn}

    def _update_finished(self, campaign: Campaign) -> None:
        update = campaign.latest_update
        if update is None or update.progress.status != ACTIVE:
            return
        # Only now does the campaign serve the new version: until then the old one keeps serving.
        campaign.solution_version_arn = update.solution_version_arn
        campaign.min_tps = update.min_tps
        campaign.config = update.config
        campaign.progress.updated = now()

    def op_DescribeCampaign(self, params: dict, region: str) -> dict:
        campaign = self._lookup(self.campaigns, "campaign", params["campaignArn"])
        if not campaign.progress.terminal:
            campaign.progress.on_describe()
        elif campaign.latest_update and campaign.latest_update.progress.on_describe():
            self._update_finished(campaign)
        out = {
            "name": campaign.name,
            "campaignArn": campaign.arn,
            "solutionVersionArn": campaign.solution_version_arn,
            "minProvisionedTPS": campaign.min_tps,
            "campaignConfig": campaign.config,
            **campaign.progress.wire(),
        }
        update = campaign.latest_update
        if update:
            out["latestCampaignUpdate"] = {
                "solutionVersionArn": update.solution_version_arn,
                "minProvisionedTPS": update.min_tps,
                "campaignConfig": update.config,
                **update.progress.wire(),
            }
        return {"campaign": out}

    def op_UpdateCampaign(self, params: dict, region: str) -> dict:
        campaign = self._lookup(self.campaigns, "campaign", params["campaignArn"])
        if campaign.progress.status not in TERMINAL:
            raise ServiceError(
                "ResourceInUseException",
                f"The campaign {campaign.arn} is {campaign.progress.status}; it must be ACTIVE or CREATE FAILED",
            )
        if campaign.latest_update and not campaign.latest_update.progress.terminal:
            raise ServiceError(
                "ResourceInUseException",
                f"The campaign {campaign.arn} has an update in progress ({campaign.latest_update.progress.status})",
            )
        version_arn = campaign.solution_version_arn
        if "solutionVersionArn" in params:
            version_arn = self._resolve_version(params["solutionVersionArn"]).arn
        campaign.latest_update = CampaignUpdate(
            version_arn,
            params.get("minProvisionedTPS", campaign.min_tps),
            params.get("campaignConfig", campaign.config),
            self.progress("CampaignUpdate", campaign.name),
        )
        return {"campaignArn": campaign.arn}

    # ---- filters -----------------------------------------------------------------------------------

    def op_CreateFilter(self, params: dict, region: str) -> dict:
        name = params["name"]
        arn = self.arn(region, "filter", name)
        self._name_free(self.filters, arn, "filter", name)
        self._lookup(self.groups, "dataset group", params["datasetGroupArn"])
        expression = params["filterExpression"]
        if not re.match(r"^\s*(INCLUDE|EXCLUDE)\s+ItemID\b", expression):
            raise invalid("The filter expression must start with INCLUDE ItemID or EXCLUDE ItemID")
        self.filters[arn] = Filter(arn, name, params["datasetGroupArn"], expression, self.progress("Filter"))
        return {"filterArn": arn}

    def op_DescribeFilter(self, params: dict, region: str) -> dict:
        flt = self._lookup(self.filters, "filter", params["filterArn"])
        flt.progress.on_describe()
        return {
            "filter": {
                "name": flt.name,
                "filterArn": flt.arn,
                "datasetGroupArn": flt.group_arn,
                "filterExpression": flt.expression,
                **flt.progress.wire(),
            }
        }

    # ---- runtime -----------------------------------------------------------------------------------

    def _serving_model(self, campaign_arn: str) -> tuple[Campaign, SolutionVersion]:
        campaign = self._lookup(self.campaigns, "campaign", campaign_arn)
        if campaign.progress.status != ACTIVE:
            raise ServiceError(
                "ResourceNotFoundException",
                f"The campaign {campaign_arn} is {campaign.progress.status}; it serves once ACTIVE",
            )
        return campaign, self.versions[campaign.solution_version_arn]

    def _check_filter(self, params: dict, campaign: Campaign, version: SolutionVersion) -> None:
        filter_arn = params.get("filterArn")
        values = params.get("filterValues")
        if filter_arn is None:
            if values:
                raise invalid("filterValues were given without a filterArn")
            return
        flt = self._lookup(self.filters, "filter", filter_arn)
        if flt.progress.status != ACTIVE:
            raise invalid(f"The filter {filter_arn} is {flt.progress.status}; it must be ACTIVE", rule_violation=False)
        group_arn = self.solutions[version.solution_arn].group_arn
        if flt.group_arn != group_arn:
            raise invalid(f"The filter {filter_arn} belongs to another dataset group than campaign {campaign.arn}")
        expected = _placeholders(flt.expression)
        given = set(values or {})
        if given != expected:
            raise invalid(
                f"filterValues must name exactly the filter's placeholders {sorted(expected)}; got {sorted(given)}"
            )

    def _check_metadata(self, params: dict, campaign: Campaign, num_results: int) -> None:
        if not params.get("metadataColumns"):
            return
        if not campaign.config.get("enableMetadataWithRecommendations"):
            raise invalid(
                f"metadataColumns need a campaign with enableMetadataWithRecommendations; {campaign.arn} has it off"
            )
        if num_results > MAX_NUM_RESULTS_WITH_METADATA:
            raise invalid(
                f"numResults {num_results} is above {MAX_NUM_RESULTS_WITH_METADATA}, the maximum with metadataColumns"
            )

    def _recommendation_id(self) -> str:
        return f"RID-{uuid.uuid4()}"

    def op_GetRecommendations(self, params: dict, region: str) -> dict:
        campaign_arn = params.get("campaignArn")
        recommender_arn = params.get("recommenderArn")
        if (campaign_arn is None) == (recommender_arn is None):
            raise invalid("Exactly one of campaignArn and recommenderArn is required", path="campaignArn")
        if recommender_arn is not None:
            raise not_found("recommender", recommender_arn)
        num_results = params.get("numResults", DEFAULT_NUM_RESULTS)
        if num_results > MAX_NUM_RESULTS:
            raise invalid(f"numResults {num_results} is above the maximum of {MAX_NUM_RESULTS}", path="numResults")
        campaign, version = self._serving_model(campaign_arn)
        self._check_metadata(params, campaign, num_results)
        self._check_filter(params, campaign, version)
        recipe = self.solutions[version.solution_arn].request.get("recipeArn", "")
        related_items = "sims" in recipe or "similar-items" in recipe
        if related_items:
            if not params.get("itemId"):
                raise invalid(f"itemId is required for the RELATED_ITEMS campaign {campaign.arn}")
            ranked = version.model.similar_items(params["itemId"], num_results)
        else:
            user_id = params.get("userId")
            if not user_id:
                raise invalid(f"userId is required for the USER_PERSONALIZATION campaign {campaign.arn}")
            ranked = version.model.recommend(user_id, num_results, self.live_history.get(user_id, ()))
        with_metadata = bool(params.get("metadataColumns"))
        items = []
        for item_id, score in ranked:
            item = {"itemId": item_id, "score": score}
            if with_metadata:
                item["metadata"] = {}
            items.append(item)
        return {"itemList": items, "recommendationId": self._recommendation_id()}

    def op_GetPersonalizedRanking(self, params: dict, region: str) -> dict:
        input_list = params["inputList"]
        if not input_list:
            raise invalid("inputList must contain at least one item", path="inputList")
        if len(input_list) > MAX_RANKING_INPUT:
            raise invalid(
                f"inputList has {len(input_list)} items; the maximum is {MAX_RANKING_INPUT}", path="inputList"
            )
        if not params["userId"]:
            raise invalid("userId must not be empty")
        campaign, version = self._serving_model(params["campaignArn"])
        self._check_metadata(params, campaign, len(input_list))
        self._check_filter(params, campaign, version)
        ranked = version.model.rank(params["userId"], input_list, self.live_history.get(params["userId"], ()))
        return {
            "personalizedRanking": [{"itemId": item, "score": score} for item, score in ranked],
            "recommendationId": self._recommendation_id(),
        }

    # ---- events --------------------------------------------------------------------------------------

    def op_PutEvents(self, params: dict, region: str) -> dict:
        user_id = params.get("userId")
        for event in params["eventList"]:
            if "properties" in event:
                try:
                    json.loads(event["properties"])
                except json.JSONDecodeError as err:
                    raise invalid(f"Event properties must be a JSON string: {err}") from None
            if user_id and event.get("itemId"):
                history = self.live_history.setdefault(user_id, [])
                if event["itemId"] not in history:
                    history.append(event["itemId"])
        return {}

    def _put_records(self, params: dict, key: str, id_key: str) -> dict:
        dataset = self._lookup(self.datasets, "dataset", params["datasetArn"])
        for record in params[key]:
            if "properties" in record:
                try:
                    json.loads(record["properties"])
                except json.JSONDecodeError as err:
                    raise invalid(f"{id_key} {record[id_key]}: properties must be a JSON string: {err}") from None
            dataset.records[record[id_key]] = record
        return {}

    def op_PutUsers(self, params: dict, region: str) -> dict:
        return self._put_records(params, "users", "userId")

    def op_PutItems(self, params: dict, region: str) -> dict:
        return self._put_records(params, "items", "itemId")
