//! The domain: one delivered event in, its effects out, each exactly once.
//!
//! EventBridge delivers at least once and sometimes out of order, so every step is
//! idempotent by the event id and a retry after a partial failure completes only
//! what is missing:
//!
//! 1. **Interaction** (student events that name a class): `InteractionSink::put`,
//!    keyed by event id; a redelivery finds the first copy and writes nothing.
//! 2. **Confirmation email** (`student.enrolled`): claim `confirmation-email#<id>`
//!    in the [ledger](crate::ledger) with a lease → send → record *done* with the
//!    transport's message id. A redelivery that finds *done* sends nothing; one that
//!    finds a live claim fails with a retryable [`ConsumerError::InProgressElsewhere`]
//!    (Lambda retries a minute later); a claim whose lease ran out (its holder
//!    crashed) may be taken over. A send that fails for certain (SES refused it, or it
//!    never left) releases the claim at once; one that may have gone out anyway
//!    ([`ConsumerError::may_have_taken_effect`]) keeps it until the lease expires.
//! 3. **Retrain** (`ranking.requestUpdate`): the same claim/done protocol around
//!    starting a training-export run, so a redelivered request starts one run.
//!
//! **The narrow window, honestly.** SES `SendEmail` has no idempotency key. If the
//! process dies after SES accepted an email but before the ledger says *done* (or
//! the ledger stays unreachable through four attempts over about a second), the
//! claim stays until its lease expires and the next delivery sends again: at most
//! one duplicate email, only in that crash-or-outage case. The lease (default 60 s,
//! `CLAIM_LEASE_SECS`) must be longer than one delivery can take (the Lambda
//! timeout), or a slow but alive delivery could be overtaken; when that happens the
//! late finisher logs a warning (`Completion::RecordedAfterTakeover`). The same
//! holds for an ambiguous SES failure (a timeout, a 5xx, a connection lost after the
//! request went out): SES is called once, without SDK retries, the claim is kept, and
//! redeliveries within the lease send nothing; the first delivery after it sends
//! again, which is a duplicate only if SES had in fact accepted the first email.
//! Keep `SES_TIMEOUT_MS` well under the lease.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use schemas::events::{AnnouncementSent, AssignmentSubmitted, StudentEnrolled};
use schemas::ses::{BounceType, SesEvent, SesFeedback};
use schemas::{DomainEvent, EmailAddress, EventEnvelope, EventError, EventId, ParsedEvent};
use serde::Serialize;
use store::{InteractionSink, PutOutcome};
use tracing::Instrument;

use crate::error::ConsumerError;
use crate::ledger::{Claim, Completion, Effect, EffectKey, IdempotencyLedger};
use crate::mail::pacer::Pacer;
use crate::mail::{Language, Mailer, OutgoingEmail, render_announcement, render_enrollment};
use crate::retrain::{RetrainRequest, RetrainTrigger};
use crate::roster::{self, Roster, Student};
use crate::suppression::{AddressKey, Suppression, SuppressionList, SuppressionReason};

/// How long a claim protects an effect in progress, unless configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// Attempts at recording an effect as done before giving up.
const RECORD_ATTEMPTS: u32 = 4;

/// Emails a second an announcement sends at most, unless configured (`EMAIL_SEND_RATE`):
/// below SES's default production quota of 14 a second.
pub const DEFAULT_SEND_RATE: f64 = 10.0;

/// How long one delivery spends on an announcement before it stops and lets a
/// redelivery go on (`ANNOUNCEMENT_BUDGET_SECS`); keep it under the Lambda timeout.
pub const DEFAULT_ANNOUNCEMENT_BUDGET: Duration = Duration::from_secs(20);

/// One student's copy: sends in flight at once (each still waits for its slot).
const ANNOUNCEMENT_CONCURRENCY: usize = 4;

/// Attempts at one student's copy when SES throttles or fails for certain.
const COPY_ATTEMPTS: u32 = 3;

/// Epoch seconds now; replaceable so tests can move time past a lease.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

fn system_clock() -> Clock {
    Arc::new(|| time::OffsetDateTime::now_utc().unix_timestamp())
}

/// Who the confirmation comes from, and in which language.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub sender: EmailAddress,
    pub language: Language,
}

/// What happened to the interaction of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum InteractionOutcome {
    /// New, and now stored.
    Stored,
    /// Already stored by an earlier delivery; nothing written.
    Duplicate,
    /// The event does not stand for an interaction (announcement, retrain request,
    /// a submission that names no class).
    NotAnInteraction,
}

/// What happened to a once-only effect (the email, the retrain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum EffectOutcome {
    /// This delivery performed it.
    Performed {
        receipt: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        outbox_file: Option<PathBuf>,
    },
    /// The address is suppressed (it bounced for good or complained): nothing was
    /// sent, and nothing will be; recorded as such, not retried.
    Suppressed { reason: String },
    /// An earlier delivery did; nothing was done now.
    AlreadyDone { receipt: String },
}

/// What one SES event (a bounce, a complaint, a delivery) did to the suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum FeedbackOutcome {
    #[serde(rename_all = "camelCase")]
    Applied {
        /// SES's `eventType`: `Bounce`, `Complaint`, …
        event_type: &'static str,
        /// Addresses this event suppressed.
        suppressed: usize,
        /// Addresses that were suppressed already.
        already_suppressed: usize,
        /// Transient bounces counted.
        transient_bounces: usize,
        /// Recipients SES named that are not addresses (ignored).
        unreadable_recipients: usize,
    },
    /// An earlier delivery of the same SES event handled it.
    AlreadyHandled { receipt: String },
}

/// What an announcement did: one copy per student on the class's roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnouncementOutcome {
    pub class_id: String,
    /// Students on the roster.
    pub students: usize,
    /// Copies this delivery sent.
    pub sent: usize,
    /// Students whose address is suppressed: recorded, not sent.
    pub suppressed: usize,
    /// Copies an earlier delivery already sent (or recorded as suppressed).
    pub already_done: usize,
}

/// Everything one delivery did. Holds ids and receipts, never addresses or names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub event_id: EventId,
    pub detail_type: &'static str,
    pub interaction: InteractionOutcome,
    /// `student 1 → class A1 (enrolled)`, when the event is an interaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interaction_summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<EffectOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrain: Option<EffectOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announcement: Option<AnnouncementOutcome>,
}

impl Outcome {
    /// True when this delivery changed nothing anywhere (a pure redelivery).
    pub fn wrote_nothing(&self) -> bool {
        self.interaction != InteractionOutcome::Stored
            && [&self.email, &self.retrain].iter().all(|e| {
                !matches!(e, Some(EffectOutcome::Performed { .. } | EffectOutcome::Suppressed { .. }))
            })
            && !matches!(self.feedback, Some(FeedbackOutcome::Applied { .. }))
            && self.announcement.as_ref().is_none_or(|a| a.sent == 0 && a.suppressed == 0)
    }

    /// One line per effect, for people (the CLI prints these).
    pub fn report_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let summary = self.interaction_summary.as_deref().unwrap_or("");
        if self.feedback.is_none() {
            lines.push(match self.interaction {
                InteractionOutcome::Stored => format!("stored interaction: {summary}"),
                InteractionOutcome::Duplicate => {
                    format!("duplicate: nothing written (interaction {summary} is already stored)")
                }
                InteractionOutcome::NotAnInteraction => {
                    format!("no interaction: a {} event is acknowledged, not recorded", self.detail_type)
                }
            });
        }
        match &self.email {
            Some(EffectOutcome::Performed { outbox_file: Some(path), .. }) => {
                lines.push(format!("email written to {}", path.display()))
            }
            Some(EffectOutcome::Performed { receipt, .. }) => {
                lines.push(format!("email sent (message id {receipt})"))
            }
            Some(EffectOutcome::Suppressed { reason }) => lines
                .push(format!("email not sent: the address is suppressed ({reason}); recorded, not retried")),
            Some(EffectOutcome::AlreadyDone { receipt }) if receipt.starts_with(SUPPRESSED_RECEIPT) => {
                lines.push(format!("duplicate: already handled for this event ({receipt}), nothing sent"))
            }
            Some(EffectOutcome::AlreadyDone { receipt }) => lines.push(format!(
                "duplicate: email already sent for this event (message id {receipt}), nothing sent"
            )),
            None => {}
        }
        match &self.feedback {
            Some(FeedbackOutcome::Applied {
                event_type,
                suppressed,
                already_suppressed,
                transient_bounces,
                unreadable_recipients,
            }) => lines.push(format!(
                "SES {event_type}: {suppressed} address(es) suppressed, {already_suppressed} already suppressed, \
                 {transient_bounces} transient bounce(s) counted, {unreadable_recipients} unreadable recipient(s)"
            )),
            Some(FeedbackOutcome::AlreadyHandled { receipt }) => {
                lines.push(format!("duplicate: this SES event was already handled ({receipt})"))
            }
            None => {}
        }
        if let Some(a) = &self.announcement {
            lines.push(format!(
                "announcement to class {}: {} student(s), {} sent, {} suppressed (not sent), {} already sent earlier",
                a.class_id, a.students, a.sent, a.suppressed, a.already_done
            ));
        }
        match &self.retrain {
            Some(EffectOutcome::Performed { receipt, .. }) => lines.push(format!("retrain: {receipt}")),
            Some(EffectOutcome::Suppressed { reason }) => {
                lines.push(format!("retrain: not started ({reason})"))
            }
            Some(EffectOutcome::AlreadyDone { receipt }) => {
                lines.push(format!("duplicate: retrain already started for this event ({receipt})"))
            }
            None => {}
        }
        lines
    }
}

/// The consumer: the ports it writes through and how it words its email.
#[derive(Clone)]
pub struct Consumer {
    store: Arc<dyn InteractionSink>,
    mailer: Arc<dyn Mailer>,
    ledger: Arc<dyn IdempotencyLedger>,
    suppressions: Arc<dyn SuppressionList>,
    roster: Arc<dyn Roster>,
    retrain: Arc<dyn RetrainTrigger>,
    email: EmailSettings,
    lease: Duration,
    clock: Clock,
    pacer: Arc<Pacer>,
    announcement_budget: Duration,
}

impl Consumer {
    /// `ledger` keeps the effects' records, the suppression list and the roster (the
    /// embedded ledger's one file; in AWS see [`Consumer::with_ports`]).
    pub fn new<L>(
        store: Arc<dyn InteractionSink>,
        mailer: Arc<dyn Mailer>,
        ledger: Arc<L>,
        retrain: Arc<dyn RetrainTrigger>,
        email: EmailSettings,
    ) -> Self
    where
        L: IdempotencyLedger + SuppressionList + Roster + 'static,
    {
        Self::with_ports(store, mailer, ledger.clone(), ledger.clone(), ledger, retrain, email)
    }

    /// The same, with the ledger, the suppression list and the roster as separate ports
    /// (in AWS the roster is the students table, the other two share the ledger table).
    pub fn with_ports(
        store: Arc<dyn InteractionSink>,
        mailer: Arc<dyn Mailer>,
        ledger: Arc<dyn IdempotencyLedger>,
        suppressions: Arc<dyn SuppressionList>,
        roster: Arc<dyn Roster>,
        retrain: Arc<dyn RetrainTrigger>,
        email: EmailSettings,
    ) -> Self {
        Self {
            store,
            mailer,
            ledger,
            suppressions,
            roster,
            retrain,
            email,
            lease: DEFAULT_LEASE,
            clock: system_clock(),
            pacer: Arc::new(Pacer::new(DEFAULT_SEND_RATE)),
            announcement_budget: DEFAULT_ANNOUNCEMENT_BUDGET,
        }
    }

    /// At most `per_second` announcement emails a second (0: unpaced), and `budget` of
    /// one delivery's time for an announcement before it stops and is redelivered.
    pub fn with_announcement_pacing(mut self, per_second: f64, budget: Duration) -> Self {
        self.pacer = Arc::new(Pacer::new(per_second));
        self.announcement_budget = budget;
        self
    }

    /// How long a claim on an effect lasts; see the module docs for how to pick it.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Handles raw JSON as EventBridge delivers it (the CLI's input).
    pub async fn handle_json(&self, raw: &[u8]) -> Result<Outcome, ConsumerError> {
        match serde_json::from_slice::<serde_json::Value>(raw) {
            Ok(value) => self.handle_value(value).await,
            Err(e) => {
                let err = EventError::Malformed(format!("envelope: {e}"));
                log_rejected(None, &err);
                Err(err.into())
            }
        }
    }

    /// Handles the event JSON a Lambda receives.
    pub async fn handle_value(&self, value: serde_json::Value) -> Result<Outcome, ConsumerError> {
        let claimed_id = raw_event_id(&value);
        let envelope = serde_json::from_value::<EventEnvelope>(value)
            .map_err(|e| EventError::Malformed(format!("envelope: {e}")));
        if let Ok(envelope) = &envelope
            && SesEvent::is_ses(&envelope.source)
        {
            return match SesEvent::from_envelope(envelope) {
                Ok(event) => self.handle_ses(&event).await,
                Err(err) => {
                    log_rejected(claimed_id.as_deref(), &err);
                    Err(err.into())
                }
            };
        }
        let parsed = envelope.and_then(|envelope| ParsedEvent::from_envelope(&envelope));
        match parsed {
            Ok(event) => self.handle(&event).await,
            Err(err) => {
                log_rejected(claimed_id.as_deref(), &err);
                Err(err.into())
            }
        }
    }

    /// Handles one parsed event: interaction, then email or retrain, each at most once.
    pub async fn handle(&self, event: &ParsedEvent) -> Result<Outcome, ConsumerError> {
        let detail_type = event.event.detail_type().as_str();
        let span = tracing::info_span!("event", event_id = %event.id, detail_type);
        let result = self.handle_inner(event).instrument(span.clone()).await;
        let _entered = span.enter();
        match &result {
            Ok(outcome) => tracing::info!(
                interaction = ?outcome.interaction,
                email = outcome.email.as_ref().map(effect_status),
                retrain = outcome.retrain.as_ref().map(effect_status),
                "event handled"
            ),
            Err(err) => tracing::warn!(
                retryable = err.is_retryable(),
                error_kind = err.kind(),
                reason = %err,
                "event not handled"
            ),
        }
        result
    }

    async fn handle_inner(&self, event: &ParsedEvent) -> Result<Outcome, ConsumerError> {
        let interaction = event.interaction();
        let interaction_summary = interaction.as_ref().map(|i| {
            format!("student {} → class {} ({})", i.user_id.as_str(), i.item_id.as_str(), i.event_type)
        });
        let interaction_outcome = match &interaction {
            Some(i) => match self.store.put(i).await? {
                PutOutcome::Inserted => InteractionOutcome::Stored,
                PutOutcome::Duplicate => InteractionOutcome::Duplicate,
            },
            None => InteractionOutcome::NotAnInteraction,
        };

        let mut outcome = Outcome {
            event_id: event.id.clone(),
            detail_type: event.event.detail_type().as_str(),
            interaction: interaction_outcome,
            interaction_summary,
            email: None,
            retrain: None,
            feedback: None,
            announcement: None,
        };
        match &event.event {
            DomainEvent::StudentEnrolled(enrolled) => {
                // On the class's roster for announcements; idempotent, newest enrollment wins.
                self.roster
                    .enroll(&enrolled.class_id, &Student::of(enrolled), event.time.epoch_seconds())
                    .await?;
                outcome.email = Some(self.confirm_enrollment(&event.id, enrolled).await?);
            }
            DomainEvent::RankingUpdateRequested(request) => {
                let request =
                    RetrainRequest { trigger: request.trigger.clone(), request_id: event.id.clone() };
                let key = EffectKey::new(Effect::Retrain, event.id.clone());
                let retrain = self.retrain.clone();
                outcome.retrain = Some(
                    self.once(key, || async move {
                        let receipt = retrain.start(&request).await?;
                        Ok(Done::Performed { receipt, outbox_file: None })
                    })
                    .await?,
                );
            }
            DomainEvent::AnnouncementSent(announcement) => {
                outcome.announcement = Some(self.announce(&event.id, announcement).await?);
            }
            DomainEvent::AssignmentSubmitted(AssignmentSubmitted { class_id: None, .. }) => {
                tracing::info!("submission names no class; acknowledged without an interaction");
            }
            DomainEvent::AssignmentSubmitted(_) => {}
        }
        Ok(outcome)
    }

    async fn confirm_enrollment(
        &self,
        event_id: &EventId,
        enrolled: &StudentEnrolled,
    ) -> Result<EffectOutcome, ConsumerError> {
        // Render before claiming: a template failure must not hold a claim.
        let content = render_enrollment(self.email.language, enrolled)?;
        let email = OutgoingEmail {
            event_id: event_id.clone(),
            recipient: None,
            from: self.email.sender.clone(),
            to: enrolled.email.clone(),
            content,
        };
        let mailer = self.mailer.clone();
        let suppressions = self.suppressions.clone();
        self.once(EffectKey::new(Effect::ConfirmationEmail, event_id.clone()), || async move {
            // Looked up under the claim, so a suppression recorded before this delivery
            // took the effect on is always seen.
            if let Some(suppression) = suppressions.lookup(&AddressKey::of(&email.to)).await? {
                tracing::info!(reason = %suppression.reason, "address suppressed; the email is not sent");
                return Ok(Done::Suppressed { reason: suppression.describe() });
            }
            let receipt = mailer.send(&email).await?;
            Ok(Done::Performed { receipt: receipt.message_id, outbox_file: receipt.outbox_file })
        })
        .await
    }

    /// Emails the announcement to every student on the class's roster, one copy each
    /// however often the event is delivered (a ledger record per announcement and
    /// student), skipping suppressed addresses, paced below the sending rate. Stops
    /// when its time budget is spent and fails retryably, so the redelivery goes on
    /// from there (the copies sent are recorded and skipped).
    async fn announce(
        &self,
        event_id: &EventId,
        announcement: &AnnouncementSent,
    ) -> Result<AnnouncementOutcome, ConsumerError> {
        let deadline = tokio::time::Instant::now() + self.announcement_budget;
        let language = announcement.language.map(Language::from).unwrap_or(self.email.language);
        let class_name =
            announcement.class_name.as_ref().map_or(announcement.class_id.as_str(), |n| n.as_str());
        let mut outcome = AnnouncementOutcome {
            class_id: announcement.class_id.as_str().to_owned(),
            students: 0,
            sent: 0,
            suppressed: 0,
            already_done: 0,
        };
        let (mut deferred, mut held, mut failed) = (0usize, 0usize, Vec::new());
        let mut after = None;
        loop {
            let page = self.roster.page(&announcement.class_id, after.as_ref(), roster::PAGE_SIZE).await?;
            outcome.students += page.students.len();
            let copies = futures::stream::iter(page.students.iter())
                .map(|student| {
                    self.announce_to(event_id, student, language, class_name, &announcement.content, deadline)
                })
                .buffer_unordered(ANNOUNCEMENT_CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            for copy in copies {
                match copy {
                    Copy::Done(EffectOutcome::Performed { .. }) => outcome.sent += 1,
                    Copy::Done(EffectOutcome::Suppressed { .. }) => outcome.suppressed += 1,
                    Copy::Done(EffectOutcome::AlreadyDone { .. }) => outcome.already_done += 1,
                    Copy::Deferred => deferred += 1,
                    Copy::HeldElsewhere => held += 1,
                    Copy::Failed(err) => failed.push(err),
                }
            }
            match page.next_after {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        if deferred + held + failed.len() == 0 {
            tracing::info!(
                students = outcome.students,
                sent = outcome.sent,
                suppressed = outcome.suppressed,
                already_done = outcome.already_done,
                "announcement sent"
            );
            return Ok(outcome);
        }
        let mut reasons = Vec::new();
        if deferred > 0 {
            reasons.push(format!(
                "{deferred} past this delivery's {}s budget",
                self.announcement_budget.as_secs()
            ));
        }
        if held > 0 {
            reasons.push(format!("{held} being sent by another delivery"));
        }
        if let Some(first) = failed.first() {
            reasons.push(format!("{} failed, the first: {first}", failed.len()));
        }
        Err(ConsumerError::AnnouncementIncomplete {
            class_id: outcome.class_id,
            sent: outcome.sent,
            unfinished: deferred + held + failed.len(),
            reason: reasons.join("; "),
            retryable: deferred > 0 || held > 0 || failed.iter().any(ConsumerError::is_retryable),
        })
    }

    /// One student's copy of an announcement, at most once.
    async fn announce_to(
        &self,
        event_id: &EventId,
        student: &Student,
        language: Language,
        class_name: &str,
        content: &str,
        deadline: tokio::time::Instant,
    ) -> Copy {
        let rendered = match render_announcement(
            language,
            class_name,
            student.name.as_ref().map(|n| n.as_str()),
            content,
        ) {
            Ok(rendered) => rendered,
            Err(err) => return Copy::Failed(err.into()),
        };
        let email = OutgoingEmail {
            event_id: event_id.clone(),
            recipient: Some(student.student_id.clone()),
            from: self.email.sender.clone(),
            to: student.email.clone(),
            content: rendered,
        };
        let key =
            EffectKey::for_recipient(Effect::AnnouncementEmail, event_id.clone(), student.student_id.clone());
        let mut backoff = Duration::from_millis(200);
        for attempt in 1..=COPY_ATTEMPTS {
            if tokio::time::Instant::now() >= deadline {
                return Copy::Deferred;
            }
            let (mailer, suppressions, pacer, email) =
                (self.mailer.clone(), self.suppressions.clone(), self.pacer.clone(), &email);
            let result = self
                .once(key.clone(), || async move {
                    if let Some(suppression) = suppressions.lookup(&AddressKey::of(&email.to)).await? {
                        return Ok(Done::Suppressed { reason: suppression.describe() });
                    }
                    pacer.wait().await;
                    let receipt = mailer.send(email).await?;
                    Ok(Done::Performed { receipt: receipt.message_id, outbox_file: receipt.outbox_file })
                })
                .await;
            match result {
                Ok(outcome) => return Copy::Done(outcome),
                Err(ConsumerError::InProgressElsewhere { .. }) => return Copy::HeldElsewhere,
                // Throttled, or failed before anything left: the claim is free again.
                Err(err)
                    if err.is_retryable()
                        && !err.may_have_taken_effect()
                        && attempt < COPY_ATTEMPTS
                        && tokio::time::Instant::now() + backoff < deadline =>
                {
                    tracing::info!(student_id = student.student_id.as_str(), attempt, error = %err,
                        "announcement copy failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(err) => {
                    tracing::warn!(student_id = student.student_id.as_str(), retryable = err.is_retryable(),
                        error = %err, "announcement copy not sent");
                    return Copy::Failed(err);
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// One SES event: a permanent bounce or a complaint suppresses its recipients (here
    /// and on SES's account-level list), a transient bounce is counted, the rest is
    /// acknowledged. Once per SES report, however often it is delivered.
    async fn handle_ses(&self, event: &SesEvent) -> Result<Outcome, ConsumerError> {
        let span = tracing::info_span!("ses_event", ses_event = %event.dedupe_id, event_type = event.kind.event_type());
        let result = self.handle_ses_inner(event).instrument(span.clone()).await;
        let _entered = span.enter();
        match &result {
            Ok(outcome) => tracing::info!(feedback = ?outcome.feedback, "SES event handled"),
            Err(err) => {
                tracing::warn!(retryable = err.is_retryable(), error_kind = err.kind(), reason = %err,
                "SES event not handled")
            }
        }
        result
    }

    async fn handle_ses_inner(&self, event: &SesEvent) -> Result<Outcome, ConsumerError> {
        let key = EffectKey::new(Effect::SesFeedback, event.dedupe_id.clone());
        let counts = Arc::new(std::sync::Mutex::new((0usize, 0usize, 0usize)));
        let (suppressions, mailer, now) = (self.suppressions.clone(), self.mailer.clone(), (self.clock)());
        let shared = counts.clone();
        let done = self
            .once(key, || async move {
                let (mut suppressed, mut already, mut transient) = (0, 0, 0);
                let reason = match &event.feedback {
                    SesFeedback::Bounce { bounce_type: BounceType::Permanent, sub_type } => {
                        Some((SuppressionReason::Bounce, format!("Permanent/{sub_type}")))
                    }
                    SesFeedback::Complaint { feedback_type } => Some((
                        SuppressionReason::Complaint,
                        feedback_type.clone().unwrap_or_else(|| "complaint".to_owned()),
                    )),
                    _ => None,
                };
                for address in &event.recipients {
                    let address_key = AddressKey::of(address);
                    match (&reason, &event.feedback) {
                        (Some((reason, detail)), _) => {
                            let suppression =
                                Suppression { reason: *reason, detail: detail.clone(), since: now };
                            if suppressions.suppress(&address_key, &suppression).await? {
                                suppressed += 1;
                            } else {
                                already += 1;
                            }
                            // SES's own list too: every sender on the account is protected.
                            mailer.suppress_destination(address, *reason).await?;
                        }
                        (None, SesFeedback::Bounce { .. }) => {
                            let count = suppressions.count_transient_bounce(&address_key, now).await?;
                            tracing::info!(transient_bounces = count, "transient bounce counted");
                            transient += 1;
                        }
                        (None, _) => {}
                    }
                }
                *shared.lock().unwrap_or_else(|p| p.into_inner()) = (suppressed, already, transient);
                Ok(Done::Performed {
                    receipt: format!(
                        "{}: {suppressed} suppressed, {already} already, {transient} transient",
                        event.kind.event_type()
                    ),
                    outbox_file: None,
                })
            })
            .await?;
        let feedback = match done {
            EffectOutcome::AlreadyDone { receipt } => FeedbackOutcome::AlreadyHandled { receipt },
            _ => {
                let (suppressed, already_suppressed, transient_bounces) =
                    *counts.lock().unwrap_or_else(|p| p.into_inner());
                FeedbackOutcome::Applied {
                    event_type: event.kind.event_type(),
                    suppressed,
                    already_suppressed,
                    transient_bounces,
                    unreadable_recipients: event.unreadable_recipients,
                }
            }
        };
        Ok(Outcome {
            event_id: event.dedupe_id.clone(),
            detail_type: event.kind.detail_type(),
            interaction: InteractionOutcome::NotAnInteraction,
            interaction_summary: None,
            email: None,
            retrain: None,
            feedback: Some(feedback),
            announcement: None,
        })
    }

    /// Performs `perform` unless the ledger says it was done; records it when done.
    async fn once<F, Fut>(&self, key: EffectKey, perform: F) -> Result<EffectOutcome, ConsumerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Done, ConsumerError>>,
    {
        let now = (self.clock)();
        let token = match self.ledger.claim(&key, now, self.lease).await? {
            Claim::Acquired(token) => token,
            Claim::Done { receipt } => return Ok(EffectOutcome::AlreadyDone { receipt }),
            Claim::HeldElsewhere { lease_expires_at } => {
                return Err(ConsumerError::InProgressElsewhere {
                    effect: key.effect,
                    event_id: key.event_id,
                    remaining_secs: (lease_expires_at - now).max(0),
                });
            }
        };
        match perform().await {
            Ok(Done::Performed { receipt, outbox_file }) => {
                self.record_done(&key, &token, &receipt).await?;
                Ok(EffectOutcome::Performed { receipt, outbox_file })
            }
            Ok(Done::Suppressed { reason }) => {
                self.record_done(&key, &token, &format!("{SUPPRESSED_RECEIPT}{reason}")).await?;
                Ok(EffectOutcome::Suppressed { reason })
            }
            Err(err) if err.may_have_taken_effect() => {
                // Releasing would let the next delivery repeat an effect that may have
                // happened; the lease decides when trying again is worth the risk.
                tracing::warn!(effect_key = %key, error = %err, lease_secs = self.lease.as_secs(),
                    "the effect may have happened although it failed; keeping the claim until its lease expires");
                Err(err)
            }
            Err(err) => {
                // The effect did not happen: free the claim so a retry need not wait.
                if let Err(release) = self.ledger.release(&key, &token).await {
                    tracing::warn!(effect_key = %key, error = %release,
                        "could not release the claim; a retry waits for its lease to expire");
                }
                Err(err)
            }
        }
    }

    /// The effect happened; recording it is what stops a repeat, so try hard.
    async fn record_done(
        &self,
        key: &EffectKey,
        token: &crate::ledger::ClaimToken,
        receipt: &str,
    ) -> Result<(), ConsumerError> {
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=RECORD_ATTEMPTS {
            match self.ledger.complete(key, token, receipt, (self.clock)()).await {
                Ok(Completion::Recorded) => return Ok(()),
                Ok(completion) => {
                    tracing::warn!(effect_key = %key, ?completion,
                        "the claim's lease ran out while the effect was performed: it may have happened twice");
                    return Ok(());
                }
                Err(err) if attempt < RECORD_ATTEMPTS && err.is_retryable() => {
                    tracing::warn!(effect_key = %key, attempt, error = %err, "recording the effect failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                }
                Err(err) => {
                    tracing::error!(effect_key = %key, error = %err,
                        "the effect happened but is not recorded; a delivery after the lease expires will repeat it");
                    return Err(err.into());
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// How one student's copy of an announcement ended in this delivery.
enum Copy {
    Done(EffectOutcome),
    /// Not tried: the delivery's time budget ran out.
    Deferred,
    /// Another delivery of the same announcement holds this copy's claim.
    HeldElsewhere,
    Failed(ConsumerError),
}

/// How a performed effect ended, before it is recorded.
enum Done {
    Performed { receipt: String, outbox_file: Option<PathBuf> },
    Suppressed { reason: String },
}

/// The ledger receipt of an email not sent to a suppressed address.
pub const SUPPRESSED_RECEIPT: &str = "suppressed: ";

fn effect_status(outcome: &EffectOutcome) -> &'static str {
    match outcome {
        EffectOutcome::Performed { .. } => "performed",
        EffectOutcome::Suppressed { .. } => "suppressed",
        EffectOutcome::AlreadyDone { .. } => "already-done",
    }
}

/// The envelope's `id` as sent, shortened, so a rejected event can still be found
/// in the dead-letter queue. Ids are opaque, never personal data.
fn raw_event_id(value: &serde_json::Value) -> Option<String> {
    value.get("id").and_then(|id| id.as_str()).map(|id| id.chars().take(64).collect())
}

fn log_rejected(claimed_id: Option<&str>, err: &EventError) {
    tracing::warn!(event_id = claimed_id, retryable = false, error_kind = "RejectedEvent", reason = %err, "event rejected");
}
