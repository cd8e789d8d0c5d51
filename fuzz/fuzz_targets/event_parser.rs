//! The EventBridge event parser on arbitrary bytes: `ParsedEvent::from_json` (the library entry point) and
//! the path the Lambda and the CLI take (`serde_json::Value` → `EventEnvelope` → `ParsedEvent::from_envelope`).
//!
//! Invariants, beyond "does not panic":
//! - both paths agree whenever both parse (the Value path may accept duplicate keys the direct
//!   path refuses, never the other way round with a different result);
//! - what is accepted satisfies the rules the types promise: ids re-parse, the timestamp is in
//!   the platform's range, the detail-type and source are a known pair;
//! - an accepted event round-trips: its `detail_json` parses back to the same event, and an
//!   envelope rebuilt from it parses back to the same `ParsedEvent`;
//! - the interaction it stands for carries the event's own ids, time and id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::{DetailType, DomainEvent, EventEnvelope, EventId, ItemId, ParsedEvent, Timestamp, UserId};

fuzz_target!(|data: &[u8]| {
    let direct = ParsedEvent::from_json(data);
    let via_value = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| serde_json::from_value::<EventEnvelope>(v).ok())
        .map(|envelope| (ParsedEvent::from_envelope(&envelope), envelope));

    if let Ok(event) = &direct {
        let Some((Ok(other), _)) = &via_value else {
            panic!("from_json accepted what the Lambda path refuses: {via_value:?}");
        };
        assert_eq!(event, other, "the two parse paths disagree");
    }
    let Some((Ok(event), envelope)) = via_value else { return };
    check(&event, &envelope);
});

fn check(event: &ParsedEvent, envelope: &EventEnvelope) {
    // The id and the time obey their rules.
    assert_eq!(EventId::parse(event.id.as_str()).as_ref(), Ok(&event.id));
    let secs = event.time.epoch_seconds();
    assert!((Timestamp::MIN..Timestamp::MAX).contains(&secs), "time {secs} out of range");

    // A known detail-type from its one allowed source; never the pipeline's own events.
    let detail_type = event.event.detail_type();
    assert_ne!(detail_type, DetailType::RankingPipeline);
    assert_eq!(envelope.detail_type, detail_type.as_str());
    assert_eq!(envelope.source, detail_type.source());

    // Ids inside the payload re-parse to themselves.
    match &event.event {
        DomainEvent::StudentEnrolled(d) => {
            assert_eq!(UserId::parse(d.student_id.as_str()).as_ref(), Ok(&d.student_id));
            assert_eq!(ItemId::parse(d.class_id.as_str()).as_ref(), Ok(&d.class_id));
        }
        DomainEvent::AssignmentSubmitted(d) => {
            assert_eq!(UserId::parse(d.student_id.as_str()).as_ref(), Ok(&d.student_id));
            assert!(!d.file_url.trim().is_empty() && d.file_url.len() <= 2048);
        }
        DomainEvent::AnnouncementSent(d) => {
            assert_eq!(UserId::parse(d.teacher_id.as_str()).as_ref(), Ok(&d.teacher_id));
            assert!(!d.content.trim().is_empty() && d.content.len() <= 100_000);
        }
        DomainEvent::RankingUpdateRequested(d) => {
            assert!(!d.trigger.is_empty() && d.trigger.len() <= 64);
            assert!(!d.trigger.chars().any(char::is_control));
        }
    }

    // The payload round-trips through the JSON a publisher would put on the bus.
    let detail = event.event.detail_json();
    let reparsed = DomainEvent::from_detail(detail_type, &detail)
        .unwrap_or_else(|e| panic!("detail_json does not parse back: {e}; {detail}"));
    assert_eq!(reparsed, event.event, "detail round trip");

    // So does the whole envelope, rebuilt from the parsed event (time in canonical RFC 3339).
    let time = time::OffsetDateTime::from_unix_timestamp(secs).expect("in range");
    let rebuilt = serde_json::json!({
        "version": "0",
        "id": event.id.as_str(),
        "detail-type": detail_type.as_str(),
        "source": detail_type.source(),
        "time": time.format(&time::format_description::well_known::Rfc3339).expect("formats"),
        "detail": detail,
    });
    let bytes = serde_json::to_vec(&rebuilt).expect("serializes");
    let again = ParsedEvent::from_json(&bytes).unwrap_or_else(|e| panic!("rebuilt envelope refused: {e}"));
    assert_eq!(&again, event, "envelope round trip");

    // The interaction, when there is one, is the event's own ids, time and id.
    if let Some(interaction) = event.interaction() {
        assert_eq!(interaction.timestamp, event.time);
        assert_eq!(interaction.event_id, event.id);
        match &event.event {
            DomainEvent::StudentEnrolled(d) => {
                assert_eq!(interaction.user_id, d.student_id);
                assert_eq!(interaction.item_id, d.class_id);
            }
            DomainEvent::AssignmentSubmitted(d) => {
                assert_eq!(interaction.user_id, d.student_id);
                assert_eq!(Some(&interaction.item_id), d.class_id.as_ref());
            }
            other => panic!("{:?} should not be an interaction", other.detail_type()),
        }
    } else {
        assert!(matches!(
            &event.event,
            DomainEvent::AnnouncementSent(_)
                | DomainEvent::RankingUpdateRequested(_)
                | DomainEvent::AssignmentSubmitted(schemas::events::AssignmentSubmitted {
                    class_id: None,
                    ..
                })
        ));
    }
}
