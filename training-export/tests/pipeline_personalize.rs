//! The state machine against the Personalize control plane, through the real SDK
//! adapter with `aws-smithy-mocks`: a small stateful fake answers Create/Describe/
//! List/Get/Update calls the way Personalize does (PENDING, IN_PROGRESS, ACTIVE or
//! CREATE FAILED; ResourceAlreadyExists for a second create with the same name).
//! The interactions come from the embedded store with the demo data; the export goes
//! to a temporary directory; runs are kept in the embedded run store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use artifacts::DirectoryStore;
use async_trait::async_trait;
use aws_sdk_personalize::Client;
use aws_sdk_personalize::config::retry::RetryConfig;
use aws_sdk_personalize::operation::create_dataset_import_job::{
    CreateDatasetImportJobError, CreateDatasetImportJobOutput,
};
use aws_sdk_personalize::operation::create_solution_version::{
    CreateSolutionVersionError, CreateSolutionVersionOutput,
};
use aws_sdk_personalize::operation::describe_campaign::DescribeCampaignOutput;
use aws_sdk_personalize::operation::describe_dataset_import_job::{
    DescribeDatasetImportJobError, DescribeDatasetImportJobOutput,
};
use aws_sdk_personalize::operation::describe_solution_version::DescribeSolutionVersionOutput;
use aws_sdk_personalize::operation::get_solution_metrics::GetSolutionMetricsOutput;
use aws_sdk_personalize::operation::list_solution_versions::ListSolutionVersionsOutput;
use aws_sdk_personalize::operation::update_campaign::UpdateCampaignOutput;
use aws_sdk_personalize::types::error::ResourceAlreadyExistsException;
use aws_sdk_personalize::types::{
    Campaign, CampaignUpdateSummary, DatasetImportJob, SolutionVersion, SolutionVersionSummary,
};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use aws_smithy_types::error::ErrorMetadata;
use store::embedded::EmbeddedStore;
use training_export::backend::{PersonalizeBackend, PersonalizeSettings};
use training_export::events::{PipelineEvent, PipelineEvents, PublishError};
use training_export::personalize::{AwsPersonalize, PersonalizeResources};
use training_export::pipeline::{Deadline, Outcome, Pipeline, Request, Response, Settings};
use training_export::run::{Run, RunState, Step};
use training_export::runs::{EmbeddedRunStore, RunStore, RunStoreError};

const REGION_ACCOUNT: &str = "us-east-1:123456789012";
const OLD_VERSION: &str = "arn:aws:personalize:us-east-1:123456789012:solution/ranking/old00000";

/// One job as the fake keeps it: how many Describe calls it has seen, and its fate.
#[derive(Debug, Clone)]
struct Job {
    name: String,
    arn: String,
    describes: u32,
    fails_with: Option<String>,
    created_at: i64,
}

impl Job {
    /// PENDING, then IN_PROGRESS, then ACTIVE (or CREATE FAILED) from the third look on.
    fn status(&mut self) -> (String, Option<String>) {
        self.describes += 1;
        match (self.describes, &self.fails_with) {
            (1, _) => ("CREATE PENDING".into(), None),
            (2, _) => ("CREATE IN_PROGRESS".into(), None),
            (_, Some(reason)) => ("CREATE FAILED".into(), Some(reason.clone())),
            (_, None) => ("ACTIVE".into(), None),
        }
    }
}

#[derive(Debug, Default)]
struct Fake {
    imports: Vec<Job>,
    versions: Vec<Job>,
    serving: Option<String>,
    update: Option<Job>,
    metrics: HashMap<String, f64>,
    /// The next N Describe calls are throttled.
    throttle: u32,
    import_fails_with: Option<String>,
    training_fails_with: Option<String>,
    update_fails_with: Option<String>,
    candidate_metric: f64,
    update_calls: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn throttled<E: aws_smithy_types::error::metadata::ProvideErrorMetadata>(
    make: impl Fn(ErrorMetadata) -> E,
) -> E {
    make(ErrorMetadata::builder().code("ThrottlingException").message("Rate exceeded").build())
}

fn fake_rules(fake: &Shared) -> Vec<Rule> {
    let f = fake.clone();
    let create_import = mock!(Client::create_dataset_import_job).then_compute_response(move |req| {
        let mut fake = f.lock().unwrap();
        let name = req.job_name().unwrap().to_owned();
        if fake.imports.iter().any(|j| j.name == name) {
            return MockResponse::Error(CreateDatasetImportJobError::ResourceAlreadyExistsException(
                ResourceAlreadyExistsException::builder().message(format!("{name} exists")).build(),
            ));
        }
        let arn = format!("arn:aws:personalize:{REGION_ACCOUNT}:dataset-import-job/{name}");
        let fails_with = fake.import_fails_with.clone();
        fake.imports.push(Job { name, arn: arn.clone(), describes: 0, fails_with, created_at: now() });
        MockResponse::Output(CreateDatasetImportJobOutput::builder().dataset_import_job_arn(arn).build())
    });
    let f = fake.clone();
    let describe_import = mock!(Client::describe_dataset_import_job).then_compute_response(move |req| {
        let mut fake = f.lock().unwrap();
        if fake.throttle > 0 {
            fake.throttle -= 1;
            return MockResponse::Error(throttled(DescribeDatasetImportJobError::generic));
        }
        let job = fake.imports.iter_mut().find(|j| Some(j.arn.as_str()) == req.dataset_import_job_arn());
        let job = job.expect("describe of a job that was created");
        let (status, reason) = job.status();
        MockResponse::Output(
            DescribeDatasetImportJobOutput::builder()
                .dataset_import_job(
                    DatasetImportJob::builder()
                        .job_name(&job.name)
                        .dataset_import_job_arn(&job.arn)
                        .status(status)
                        .set_failure_reason(reason)
                        .build(),
                )
                .build(),
        )
    });
    let f = fake.clone();
    let create_version = mock!(Client::create_solution_version).then_compute_response(move |req| {
        let mut fake = f.lock().unwrap();
        let name = req.name().unwrap().to_owned();
        if fake.versions.iter().any(|j| j.name == name) {
            return MockResponse::Error(CreateSolutionVersionError::ResourceAlreadyExistsException(
                ResourceAlreadyExistsException::builder().message(format!("{name} exists")).build(),
            ));
        }
        // Solution version ARNs end in a random id: not derivable from the name.
        let arn = format!(
            "arn:aws:personalize:{REGION_ACCOUNT}:solution/ranking/{:08x}",
            fake.versions.len() + 0xa1
        );
        let fails_with = fake.training_fails_with.clone();
        let metric = fake.candidate_metric;
        fake.metrics.insert(arn.clone(), metric);
        fake.versions.push(Job { name, arn: arn.clone(), describes: 0, fails_with, created_at: now() });
        MockResponse::Output(CreateSolutionVersionOutput::builder().solution_version_arn(arn).build())
    });
    let f = fake.clone();
    let list_versions = mock!(Client::list_solution_versions).then_compute_output(move |_| {
        let fake = f.lock().unwrap();
        let summaries = fake.versions.iter().map(|j| {
            SolutionVersionSummary::builder()
                .solution_version_arn(&j.arn)
                .creation_date_time(DateTime::from_secs(j.created_at))
                .build()
        });
        ListSolutionVersionsOutput::builder().set_solution_versions(Some(summaries.collect())).build()
    });
    let f = fake.clone();
    let describe_version = mock!(Client::describe_solution_version).then_compute_response(move |req| {
        let mut fake = f.lock().unwrap();
        if fake.throttle > 0 {
            fake.throttle -= 1;
            return MockResponse::Error(throttled(
                aws_sdk_personalize::operation::describe_solution_version::DescribeSolutionVersionError::generic,
            ));
        }
        let job = fake.versions.iter_mut().find(|j| Some(j.arn.as_str()) == req.solution_version_arn());
        let job = job.expect("describe of a version that was created");
        let (status, reason) = job.status();
        MockResponse::Output(
            DescribeSolutionVersionOutput::builder()
                .solution_version(
                    SolutionVersion::builder()
                        .name(&job.name)
                        .solution_version_arn(&job.arn)
                        .status(status)
                        .set_failure_reason(reason)
                        .build(),
                )
                .build(),
        )
    });
    let f = fake.clone();
    let metrics = mock!(Client::get_solution_metrics).then_compute_output(move |req| {
        let fake = f.lock().unwrap();
        let arn = req.solution_version_arn().unwrap();
        let value = fake.metrics.get(arn).copied();
        GetSolutionMetricsOutput::builder()
            .solution_version_arn(arn)
            .set_metrics(value.map(|v| {
                HashMap::from([
                    ("normalized_discounted_cumulative_gain_at_10".to_owned(), v),
                    ("precision_at_10".to_owned(), v / 3.0),
                ])
            }))
            .build()
    });
    let f = fake.clone();
    let describe_campaign = mock!(Client::describe_campaign).then_compute_output(move |_| {
        let mut fake = f.lock().unwrap();
        let mut update = None;
        if let Some(job) = fake.update.as_mut() {
            let (status, reason) = job.status();
            if status == "ACTIVE" {
                let target = job.arn.clone();
                fake.serving = Some(target);
            }
            let job = fake.update.as_ref().unwrap();
            update = Some(
                CampaignUpdateSummary::builder()
                    .solution_version_arn(&job.arn)
                    .status(status)
                    .set_failure_reason(reason)
                    .build(),
            );
        }
        DescribeCampaignOutput::builder()
            .campaign(
                Campaign::builder()
                    .campaign_arn(format!("arn:aws:personalize:{REGION_ACCOUNT}:campaign/ranking"))
                    .status("ACTIVE")
                    .set_solution_version_arn(fake.serving.clone())
                    .set_latest_campaign_update(update)
                    .build(),
            )
            .build()
    });
    let f = fake.clone();
    let update_campaign = mock!(Client::update_campaign).then_compute_output(move |req| {
        let mut fake = f.lock().unwrap();
        fake.update_calls += 1;
        let target = req.solution_version_arn().unwrap().to_owned();
        let fails_with = fake.update_fails_with.clone();
        fake.update =
            Some(Job { name: "update".into(), arn: target, describes: 0, fails_with, created_at: now() });
        UpdateCampaignOutput::builder().build()
    });
    vec![
        create_import,
        describe_import,
        create_version,
        list_versions,
        describe_version,
        metrics,
        describe_campaign,
        update_campaign,
    ]
}

fn personalize_client(fake: &Shared) -> Client {
    let rules = fake_rules(fake);
    // Retries off: the fake's throttling must reach the pipeline, not be absorbed.
    mock_client!(aws_sdk_personalize, RuleMode::MatchAny, rules.iter(), |c| c
        .retry_config(RetryConfig::disabled()))
}

#[derive(Default)]
struct RecordedEvents {
    events: Mutex<Vec<PipelineEvent>>,
    fail_next: Mutex<u32>,
}

#[async_trait]
impl PipelineEvents for RecordedEvents {
    async fn publish(&self, event: &PipelineEvent) -> Result<(), PublishError> {
        let mut fail = self.fail_next.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(PublishError { message: "EventBridge is down".into(), retryable: true });
        }
        self.events.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// A run store that "crashes" on its N-th save: the step's external effect happened,
/// its record did not, exactly as if the Lambda died between the two.
struct CrashingRuns {
    inner: EmbeddedRunStore,
    crash_on_save: Mutex<Option<u32>>,
    saves: Mutex<u32>,
}

#[async_trait]
impl RunStore for CrashingRuns {
    async fn create(&self, run: &Run) -> Result<(), RunStoreError> {
        self.inner.create(run).await
    }
    async fn save(&self, run: &mut Run) -> Result<(), RunStoreError> {
        let crash = {
            let mut saves = self.saves.lock().unwrap();
            *saves += 1;
            *self.crash_on_save.lock().unwrap() == Some(*saves)
        };
        if crash {
            return Err(RunStoreError::Backend { message: "simulated crash".into(), retryable: false });
        }
        self.inner.save(run).await
    }
    async fn get(&self, run_id: &str) -> Result<Option<Run>, RunStoreError> {
        self.inner.get(run_id).await
    }
    async fn active(&self) -> Result<Option<Run>, RunStoreError> {
        self.inner.active().await
    }
    async fn recent(&self, limit: usize) -> Result<Vec<Run>, RunStoreError> {
        self.inner.recent(limit).await
    }
}

struct World {
    _dir: tempfile::TempDir,
    fake: Shared,
    events: Arc<RecordedEvents>,
    runs: Arc<CrashingRuns>,
    pipeline: Pipeline,
}

fn world(setup: impl FnOnce(&mut Fake)) -> World {
    world_with_data(true, setup)
}

fn world_with_data(seed: bool, setup: impl FnOnce(&mut Fake)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let interactions = EmbeddedStore::open_in(dir.path()).unwrap();
    if seed {
        store::demo::seed_if_empty(&interactions).unwrap();
    } else {
        let few = store::demo::generate(&store::demo::DemoSpec { students: 20, classes: 5, seed: 1 });
        interactions.put_many_blocking(&few.interactions).unwrap();
    }
    let mut fake = Fake { candidate_metric: 0.31, ..Fake::default() };
    fake.serving = Some(OLD_VERSION.into());
    fake.metrics.insert(OLD_VERSION.into(), 0.30);
    setup(&mut fake);
    let fake = Arc::new(Mutex::new(fake));
    let resources = PersonalizeResources {
        dataset_group_arn: format!("arn:aws:personalize:{REGION_ACCOUNT}:dataset-group/ranking"),
        interactions_dataset_arn: format!(
            "arn:aws:personalize:{REGION_ACCOUNT}:dataset/ranking/INTERACTIONS"
        ),
        solution_arn: format!("arn:aws:personalize:{REGION_ACCOUNT}:solution/ranking"),
        campaign_arn: format!("arn:aws:personalize:{REGION_ACCOUNT}:campaign/ranking"),
        import_role_arn: "arn:aws:iam::123456789012:role/personalize-import".into(),
    };
    let events = Arc::new(RecordedEvents::default());
    let runs = Arc::new(CrashingRuns {
        inner: EmbeddedRunStore::open(&dir.path().join("store.db")).unwrap(),
        crash_on_save: Mutex::new(None),
        saves: Mutex::new(0),
    });
    let objects: Arc<dyn artifacts::ObjectStore> = Arc::new(DirectoryStore::new(dir.path().join("objects")));
    let pipeline = Pipeline {
        table_exporter: None,
        interactions: Arc::new(interactions),
        objects: objects.clone(),
        runs: runs.clone(),
        events: events.clone(),
        backend: Arc::new(PersonalizeBackend::new(
            Arc::new(AwsPersonalize::new(personalize_client(&fake), resources)),
            objects,
            PersonalizeSettings::default(),
        )),
        fallback_models: None,
        settings: Settings::default(),
        progress: None,
    };
    World { _dir: dir, fake, events, runs, pipeline }
}

impl World {
    async fn send(&self, request: Request) -> Response {
        self.pipeline.handle(request, Deadline::none()).await.unwrap()
    }

    /// Invokes `advance` (the 10-minute schedule) until the run ends; returns it.
    async fn advance_to_the_end(&self, run_id: &str) -> Run {
        for _ in 0..40 {
            let run = self.runs.get(run_id).await.unwrap().unwrap();
            if !run.is_active() {
                return run;
            }
            self.pipeline.handle(Request::Advance {}, Deadline::none()).await.unwrap();
        }
        panic!("run {run_id} did not end in 40 invocations");
    }

    fn run_request() -> Request {
        Request::run("schedule", None)
    }
}

#[tokio::test]
async fn a_nightly_run_goes_from_export_to_a_live_campaign_without_waiting() {
    let w = world(|_| {});
    let started = w.send(World::run_request()).await;
    assert_eq!(started.outcome, Outcome::Started);
    let run = started.run.unwrap();
    // One invocation: export, validation, import job created; then it returns.
    assert_eq!(run.status, "Importing");
    assert_eq!(w.fake.lock().unwrap().imports[0].describes, 1, "one look at the job, no waiting loop");

    let run = w.advance_to_the_end(&run.run_id).await;
    assert_eq!(run.state, RunState::Done);
    let fake = w.fake.lock().unwrap();
    assert_eq!(fake.imports.len(), 1);
    assert_eq!(fake.imports[0].name, format!("ranking-import-{}", run.run_id));
    assert_eq!(fake.versions.len(), 1);
    assert_eq!(fake.versions[0].name, format!("ranking-{}", run.run_id));
    assert_eq!(fake.serving.as_deref(), Some(fake.versions[0].arn.as_str()));
    let import = run.import.as_ref().unwrap();
    assert_eq!(format!("{:?}", import.mode), "Full", "the first import is FULL");
    assert!(
        import.source.ends_with(&format!("exports/{}/interactions.csv", run.run_id)),
        "{}",
        import.source
    );
    assert_eq!(run.deploy.as_ref().unwrap().previous.as_deref(), Some(OLD_VERSION), "previous version kept");
    let gate = run.gate.as_ref().unwrap();
    assert_eq!((gate.candidate, gate.live, gate.passed), (Some(0.31), Some(0.30), true));
    let events = w.events.events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].status, events[0].deployed.as_deref()),
        ("Done", Some(fake.versions[0].arn.as_str()))
    );
}

#[tokio::test]
async fn a_crash_after_any_step_resumes_with_one_import_job_and_one_solution_version() {
    let mut crash_points = 0;
    for crash_on_save in 1.. {
        let mut w = world(|_| {});
        // A crashed invocation's lease would hold the run for 16 minutes; expire it at once.
        w.pipeline.settings.lease = std::time::Duration::ZERO;
        *w.runs.crash_on_save.lock().unwrap() = Some(crash_on_save);
        let crashed = w.pipeline.handle(World::run_request(), Deadline::none()).await;
        let run_id = match crashed {
            Err(e) => {
                assert!(e.to_string().contains("simulated crash"), "{e}");
                w.runs.active().await.unwrap().expect("the run is still active after a crash").run_id
            }
            Ok(r) => r.run.unwrap().run_id,
        };
        // Later invocations go on where the crashed one stopped; some may crash too.
        let mut run = None;
        for _ in 0..40 {
            let current = w.runs.get(&run_id).await.unwrap().unwrap();
            if !current.is_active() {
                run = Some(current);
                break;
            }
            let _ = w.pipeline.handle(Request::Advance {}, Deadline::none()).await;
        }
        let run = run.unwrap_or_else(|| panic!("crash on save {crash_on_save}: the run never ended"));
        let saves = *w.runs.saves.lock().unwrap();
        assert_eq!(run.state, RunState::Done, "crash on save {crash_on_save}");
        let fake = w.fake.lock().unwrap();
        assert_eq!(fake.imports.len(), 1, "crash on save {crash_on_save}: one import job");
        assert_eq!(fake.versions.len(), 1, "crash on save {crash_on_save}: one solution version");
        assert_eq!(run.training.as_ref().unwrap().version.as_deref(), Some(fake.versions[0].arn.as_str()));
        assert!(fake.update_calls >= 1 && fake.update_calls <= 2, "crash on save {crash_on_save}");
        assert_eq!(fake.serving.as_deref(), Some(fake.versions[0].arn.as_str()));
        assert_eq!(run.deploy.as_ref().unwrap().previous.as_deref(), Some(OLD_VERSION));
        let events = w.events.events.lock().unwrap();
        assert!(
            !events.is_empty() && events.iter().all(|e| e.status == "Done"),
            "crash on save {crash_on_save}"
        );
        if saves < crash_on_save {
            // The crash point lies past the last save: every state has been crashed after.
            break;
        }
        crash_points += 1;
    }
    assert!(crash_points >= 8, "crashed after {crash_points} saves; expected one per state at least");
}

#[tokio::test]
async fn a_failed_import_ends_the_run_with_personalizes_reason() {
    let w = world(|f| f.import_fails_with = Some("Input CSV has no USER_ID column".into()));
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    let run = w.advance_to_the_end(&run_id).await;
    assert_eq!(
        run.state,
        RunState::Failed { step: Step::Import, reason: "Input CSV has no USER_ID column".into() }
    );
    assert!(w.fake.lock().unwrap().versions.is_empty(), "nothing trained after a failed import");
    let events = w.events.events.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].status, events[0].step), ("Failed", Some(Step::Import)));
    assert_eq!(events[0].reason.as_deref(), Some("Input CSV has no USER_ID column"));
}

#[tokio::test]
async fn a_failed_training_ends_the_run_and_leaves_the_campaign_alone() {
    let w = world(|f| f.training_fails_with = Some("Not enough interactions".into()));
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    let run = w.advance_to_the_end(&run_id).await;
    assert_eq!(run.state, RunState::Failed { step: Step::Train, reason: "Not enough interactions".into() });
    let fake = w.fake.lock().unwrap();
    assert_eq!(fake.update_calls, 0);
    assert_eq!(fake.serving.as_deref(), Some(OLD_VERSION));
}

#[tokio::test]
async fn throttled_describes_leave_the_run_where_it_was() {
    let w = world(|_| {});
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    w.fake.lock().unwrap().throttle = 2;
    for _ in 0..2 {
        let response = w.send(Request::Advance {}).await;
        assert_eq!(response.run.as_ref().unwrap().status, "Importing");
        let last_error = response.run.unwrap().last_error.unwrap();
        assert!(last_error.contains("ThrottlingException"), "{last_error}");
    }
    let run = w.advance_to_the_end(&run_id).await;
    assert_eq!(run.state, RunState::Done);
    assert_eq!(run.last_error, None);
    assert_eq!(w.fake.lock().unwrap().imports.len(), 1);
}

#[tokio::test]
async fn a_worse_model_is_rejected_with_both_figures_and_not_deployed() {
    let w = world(|f| f.candidate_metric = 0.25);
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    let run = w.advance_to_the_end(&run_id).await;
    let RunState::Rejected { reason } = &run.state else { panic!("{:?}", run.state) };
    assert!(reason.contains("0.2500") && reason.contains("0.3000"), "{reason}");
    let fake = w.fake.lock().unwrap();
    assert_eq!(fake.update_calls, 0, "the campaign is not updated");
    assert_eq!(fake.serving.as_deref(), Some(OLD_VERSION));
    let events = w.events.events.lock().unwrap();
    assert_eq!(events[0].status, "Rejected");
    assert_eq!(events[0].metrics.get("candidate"), Some(&0.25));
    assert_eq!(events[0].metrics.get("live"), Some(&0.30));
}

#[tokio::test]
async fn a_failed_campaign_update_keeps_the_old_version_serving() {
    let w = world(|f| f.update_fails_with = Some("Insufficient capacity".into()));
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    let run = w.advance_to_the_end(&run_id).await;
    let RunState::Failed { step: Step::Deploy, reason } = &run.state else { panic!("{:?}", run.state) };
    assert!(reason.contains("Insufficient capacity") && reason.contains(OLD_VERSION), "{reason}");
    assert_eq!(w.fake.lock().unwrap().serving.as_deref(), Some(OLD_VERSION));
}

#[tokio::test]
async fn one_invoke_rolls_back_to_the_previous_version() {
    let w = world(|_| {});
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    w.advance_to_the_end(&run_id).await;
    let new_version = w.fake.lock().unwrap().versions[0].arn.clone();
    let rollback = w.send(Request::Rollback { trigger: "manual".into() }).await;
    assert_eq!(rollback.outcome, Outcome::Started);
    let run = w.advance_to_the_end(&rollback.run.unwrap().run_id).await;
    assert_eq!(run.state, RunState::Done);
    let deploy = run.deploy.unwrap();
    assert_eq!(
        (deploy.target.as_str(), deploy.previous.as_deref()),
        (OLD_VERSION, Some(new_version.as_str()))
    );
    assert_eq!(w.fake.lock().unwrap().serving.as_deref(), Some(OLD_VERSION));
}

#[tokio::test]
async fn a_second_run_is_refused_with_the_active_runs_id() {
    let w = world(|_| {});
    let first = w.send(World::run_request()).await.run.unwrap();
    for request in [World::run_request(), Request::Export { trigger: "manual".into() }] {
        let refused = w.send(request).await;
        assert_eq!(refused.outcome, Outcome::Refused);
        assert_eq!(refused.active_run_id.as_deref(), Some(first.run_id.as_str()));
    }
    let status = w.send(Request::Status {}).await;
    assert_eq!(status.active_run_id.as_deref(), Some(first.run_id.as_str()));
    assert_eq!(status.runs.len(), 1);
}

#[tokio::test]
async fn an_export_that_fails_validation_stops_before_personalize() {
    let w = world_with_data(false, |_| {});
    let run = w.send(World::run_request()).await.run.unwrap();
    assert_eq!(run.status, "Failed");
    assert_eq!(run.step, Some(Step::Validate));
    let reason = run.reason.unwrap();
    assert!(reason.contains("Personalize needs at least 1000"), "{reason}");
    assert!(w.fake.lock().unwrap().imports.is_empty(), "nothing imported");
    assert_eq!(w.events.events.lock().unwrap()[0].step, Some(Step::Validate));
}

#[tokio::test]
async fn an_unannounced_end_is_retried_until_the_event_goes_out() {
    let w = world(|f| f.candidate_metric = 0.1);
    *w.events.fail_next.lock().unwrap() = 1;
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    let run = w.advance_to_the_end(&run_id).await;
    assert!(matches!(run.state, RunState::Rejected { .. }));
    assert_eq!(w.events.events.lock().unwrap().len(), 1, "announced once the bus is back");
}

#[tokio::test]
async fn the_second_import_is_incremental_when_enough_rows_are_new() {
    let w = world(|_| {});
    let first = w.send(World::run_request()).await.run.unwrap().run_id;
    w.advance_to_the_end(&first).await;
    // 1,500 new interactions after the first import's newest one.
    let interactions = EmbeddedStore::open_in(w._dir.path()).unwrap();
    let base = store::demo::generate(&store::demo::DemoSpec::default());
    let newest = base.interactions.iter().map(|i| i.timestamp.epoch_seconds()).max().unwrap();
    let fresh: Vec<_> = (0..1_500)
        .map(|n| {
            let mut i = base.interactions[n].clone();
            i.event_id = schemas::EventId::parse(format!("fresh-{n}")).unwrap();
            i.timestamp = schemas::Timestamp::from_epoch_seconds(newest + 1 + n as i64).unwrap();
            i
        })
        .collect();
    interactions.put_many_blocking(&fresh).unwrap();
    let second = w.send(World::run_request()).await.run.unwrap().run_id;
    let run = w.advance_to_the_end(&second).await;
    let import = run.import.unwrap();
    assert_eq!(format!("{:?}", import.mode), "Incremental");
    assert!(import.source.ends_with("interactions-delta.csv"), "{}", import.source);
    assert_eq!(run.export.unwrap().delta_new_rows, Some(1_500));
}

#[tokio::test]
async fn an_invocation_leaves_a_run_alone_while_another_holds_it() {
    let w = world(|_| {});
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    let describes = || w.fake.lock().unwrap().imports[0].describes;
    let before = describes();
    // Another invocation is mid-step: it holds the lease for ten more minutes.
    let mut run = w.runs.get(&run_id).await.unwrap().unwrap();
    assert_eq!(run.lease_until, None, "a finished invocation releases its lease");
    run.lease_until = Some(now() + 600);
    w.runs.save(&mut run).await.unwrap();
    let response = w.send(Request::Advance {}).await;
    assert_eq!(response.run.unwrap().status, "Importing");
    assert_eq!(describes(), before, "Personalize was not asked again");
    // The holder died: once the lease expires, the next invocation carries on.
    let mut run = w.runs.get(&run_id).await.unwrap().unwrap();
    run.lease_until = Some(now() - 1);
    w.runs.save(&mut run).await.unwrap();
    w.send(Request::Advance {}).await;
    assert_eq!(describes(), before + 1);
    assert_eq!(w.advance_to_the_end(&run_id).await.state, RunState::Done);
}

#[tokio::test]
async fn a_failed_fallback_refresh_is_recorded_and_the_run_goes_on() {
    let mut w = world(|_| {});
    // A trainer that cannot train stands in for a broken fallback refresh.
    w.pipeline.fallback_models = Some(Arc::new(training_export::trainer::RecommenderNotBuiltIn));
    let started = w.send(World::run_request()).await;
    let run = w.advance_to_the_end(&started.run.unwrap().run_id).await;
    assert_eq!(run.state, RunState::Done, "Personalize is what users are served; the run is not held back");
    let fallback = run.fallback_model.expect("the refresh was attempted and recorded");
    assert_eq!(fallback.version, None);
    assert!(fallback.error.unwrap().contains("no model trainer is configured"));
    let fake = w.fake.lock().unwrap();
    assert_eq!((fake.imports.len(), fake.versions.len()), (1, 1));
}

#[tokio::test]
async fn a_retryable_failure_that_spends_its_attempts_fails_the_run_and_the_invocation() {
    let mut w = world(|_| {});
    w.pipeline.settings.max_attempts = 3;
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    w.fake.lock().unwrap().throttle = 100;
    for _ in 0..2 {
        let response = w.send(Request::Advance {}).await;
        assert_eq!(response.run.unwrap().status, "Importing", "still retrying");
    }
    let gave_up = w.pipeline.handle(Request::Advance {}, Deadline::none()).await.unwrap_err();
    assert_eq!(gave_up.kind(), "RunGaveUp");
    let run = w.runs.get(&run_id).await.unwrap().unwrap();
    let RunState::Failed { step, reason } = &run.state else { panic!("{:?}", run.state) };
    assert_eq!(*step, Step::Import);
    assert!(reason.contains("3 invocations at Importing without progress"), "{reason}");
    assert!(reason.contains("ThrottlingException"), "the last error is kept: {reason}");
    let events = w.events.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "announced, so the failed-run alarm fires");
    // The next nightly run is not refused.
    assert_eq!(w.send(World::run_request()).await.outcome, Outcome::Started);
}

#[tokio::test]
async fn a_run_past_its_age_limit_ends_and_the_nightly_run_starts() {
    let w = world(|_| {});
    let run_id = w.send(World::run_request()).await.run.unwrap().run_id;
    let mut run = w.runs.get(&run_id).await.unwrap().unwrap();
    run.created_at -= 49 * 3600;
    w.runs.save(&mut run).await.unwrap();
    let started = w.send(World::run_request()).await;
    assert_eq!(started.outcome, Outcome::Started, "{started:?}");
    assert_ne!(started.run.unwrap().run_id, run_id);
    let old = w.runs.get(&run_id).await.unwrap().unwrap();
    let RunState::Failed { reason, .. } = &old.state else { panic!("{:?}", old.state) };
    assert!(reason.contains("over the age limit of 48.0 h"), "{reason}");
}
