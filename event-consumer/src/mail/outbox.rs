//! The embedded mail transport: each email becomes an RFC 5322 `.eml` file in
//! `$DATA_DIR/outbox/`, named after its event, that any mail client opens.
//!
//! A file appears whole or not at all: it is written to a temporary name in the
//! same directory, flushed, then linked to its final name. Linking (unlike rename)
//! refuses to replace an existing file, so a second send for the same event keeps
//! the first file and reports it: the outbox has its own idempotency key.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use mail_builder::MessageBuilder;
use schemas::{EmailAddress, EventId};
use sha2::{Digest, Sha256};

use super::simulator::{self, Simulated, SimulatedMessage};
use super::{MailError, MailReceipt, Mailer, OutgoingEmail};
use crate::suppression::{AddressKey, SuppressionReason};

/// Folder of the outbox inside the data directory.
pub const OUTBOX_DIR: &str = "outbox";

/// Domain used in the `Message-ID` of outbox mail.
const MESSAGE_ID_DOMAIN: &str = "outbox.student-system.local";

/// The outbox's account-level suppression list: one address key (never the address)
/// and reason per line, like SES's list (see [`Mailer::suppress_destination`]).
pub const ACCOUNT_SUPPRESSION_FILE: &str = "account-suppression-list.txt";

#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
}

impl OutboxMailer {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The outbox under a data directory: `$DATA_DIR/outbox`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::new(data_dir.join(OUTBOX_DIR))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the email for `event_id` is (or will be) written.
    pub fn file_for(&self, event_id: &EventId) -> PathBuf {
        self.dir.join(format!("{}.eml", file_stem(event_id)))
    }

    fn on_account_list(&self, address: &EmailAddress) -> Result<bool, MailError> {
        let path = self.dir.join(ACCOUNT_SUPPRESSION_FILE);
        let key = AddressKey::of(address);
        match std::fs::read_to_string(&path) {
            Ok(list) => Ok(list.lines().any(|line| line.split_whitespace().next() == Some(key.as_str()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(MailError::Outbox { path, source }),
        }
    }

    fn send_blocking(&self, email: &OutgoingEmail) -> Result<MailReceipt, MailError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| MailError::Outbox { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let stem = email_stem(email);
        let message_id = format!("{stem}@{MESSAGE_ID_DOMAIN}");
        let final_path = self.dir.join(format!("{stem}.eml"));
        let receipt = MailReceipt { message_id: message_id.clone(), outbox_file: Some(final_path.clone()) };
        if final_path.exists() {
            return Ok(receipt);
        }
        // SES accepts a message to a listed address, delivers nothing and reports a bounce.
        let simulated = match Simulated::of(&email.to) {
            None if self.on_account_list(&email.to)? => Some(Simulated::SuppressionList),
            other => other,
        };
        if let Some(simulated) = simulated.filter(|s| !s.delivers()) {
            self.write_simulated_events(email, &stem, &message_id, simulated)?;
            return Ok(MailReceipt { message_id, outbox_file: None });
        }
        let bytes = build_eml(email, &message_id, time::OffsetDateTime::now_utc().unix_timestamp())
            .map_err(io(&final_path))?;

        let temp_path = self.dir.join(format!(".{stem}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = (|| {
            let mut file = std::fs::File::create_new(&temp_path)?;
            file.write_all(&bytes)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp_path);
            return Err(io(&temp_path)(e));
        }
        let linked = match std::fs::hard_link(&temp_path, &final_path) {
            Ok(()) => Ok(()),
            // Someone wrote this event's email first: theirs stands.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            // Filesystems without hard links still get an atomic (if replacing) rename.
            Err(_) => std::fs::rename(&temp_path, &final_path),
        };
        let _ = std::fs::remove_file(&temp_path);
        linked.map_err(io(&final_path))?;
        if let Some(simulated) = simulated {
            self.write_simulated_events(email, &stem, &message_id, simulated)?;
        }
        Ok(receipt)
    }

    /// Writes what SES would publish about this message (see [`simulator`](super::simulator)),
    /// each file whole, and never twice for one message.
    fn write_simulated_events(
        &self,
        email: &OutgoingEmail,
        stem: &str,
        message_id: &str,
        simulated: Simulated,
    ) -> Result<(), MailError> {
        let events_dir = self.dir.join(simulator::EVENTS_DIR);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| MailError::Outbox { path, source }
        };
        std::fs::create_dir_all(&events_dir).map_err(io(&events_dir))?;
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let message = SimulatedMessage {
            message_id,
            from: &email.from,
            to: &email.to,
            configuration_set: Some(LOCAL_CONFIGURATION_SET),
            timestamp: &timestamp,
        };
        for (index, kind) in simulated.events().iter().enumerate() {
            let path = simulator::event_file(&events_dir, stem, index, *kind);
            let handled = events_dir.join(simulator::HANDLED_DIR).join(path.file_name().unwrap_or_default());
            if path.exists() || handled.exists() {
                continue;
            }
            let body = serde_json::to_vec_pretty(&simulator::envelope(*kind, simulated, &message))
                .map_err(|e| io(&path)(std::io::Error::other(e)))?;
            let temp = events_dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
            std::fs::write(&temp, body).map_err(io(&temp))?;
            std::fs::rename(&temp, &path).map_err(io(&path))?;
        }
        Ok(())
    }

    fn suppress_blocking(&self, address: &EmailAddress, reason: SuppressionReason) -> Result<(), MailError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|source| MailError::Outbox { path: self.dir.clone(), source })?;
        if self.on_account_list(address)? {
            return Ok(());
        }
        let path = self.dir.join(ACCOUNT_SUPPRESSION_FILE);
        let line = format!("{} {reason}\n", AddressKey::of(address).as_str());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .map_err(|source| MailError::Outbox { path, source })
    }
}

/// The configuration set named in simulated events (the stack's own is `<stack>-email`).
pub const LOCAL_CONFIGURATION_SET: &str = "local";

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<MailReceipt, MailError> {
        let mailer = self.clone();
        let email = email.clone();
        tokio::task::spawn_blocking(move || mailer.send_blocking(&email))
            .await
            .map_err(|e| MailError::Task(e.to_string()))?
    }

    async fn suppress_destination(
        &self,
        address: &EmailAddress,
        reason: SuppressionReason,
    ) -> Result<(), MailError> {
        let (mailer, address) = (self.clone(), address.clone());
        tokio::task::spawn_blocking(move || mailer.suppress_blocking(&address, reason))
            .await
            .map_err(|e| MailError::Task(e.to_string()))?
    }
}

/// The RFC 5322 message: multipart/alternative with the text and HTML bodies,
/// headers encoded as the RFC wants (the Vietnamese subject becomes an encoded-word).
pub fn build_eml(
    email: &OutgoingEmail,
    message_id: &str,
    date_epoch_seconds: i64,
) -> std::io::Result<Vec<u8>> {
    MessageBuilder::new()
        .from(email.from.as_str())
        .to(email.to.as_str())
        .subject(email.content.subject.as_str())
        .message_id(message_id)
        .date(date_epoch_seconds)
        .header("X-Event-Id", mail_builder::headers::text::Text::from(email.event_id.as_str()))
        .text_body(email.content.text.as_str())
        .html_body(email.content.html.as_str())
        .write_to_vec()
}

/// A file name stem for an event id. Event ids are any plain text up to 256
/// characters, so `../x` or a 256-byte id must not become a path: ids made of safe
/// characters are used as they are; anything else is reduced to its safe
/// characters plus a hash of the whole id, so two ids never share a file.
pub fn file_stem(event_id: &EventId) -> String {
    safe_stem(event_id.as_str())
}

/// The file name stem of one email: its event's, and for one student's copy of an
/// announcement, `.` and the student's (`.` is never part of a stem, so no two
/// emails share one).
pub fn email_stem(email: &OutgoingEmail) -> String {
    match &email.recipient {
        None => file_stem(&email.event_id),
        Some(recipient) => format!("{}.{}", file_stem(&email.event_id), safe_stem(recipient.as_str())),
    }
}

fn safe_stem(id: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if id.len() <= 128 && id.chars().all(safe) {
        return id.to_owned();
    }
    let readable: String = id.chars().filter(|c| safe(*c)).take(64).collect();
    let digest = hex::encode(&Sha256::digest(id.as_bytes())[..12]);
    if readable.is_empty() { digest } else { format!("{readable}-{digest}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::RenderedEmail;

    fn email(event_id: &str) -> OutgoingEmail {
        OutgoingEmail {
            event_id: EventId::parse(event_id).unwrap(),
            recipient: None,
            from: EmailAddress::parse("no-reply@student-system.local").unwrap(),
            to: EmailAddress::parse("an.nguyen@example.edu.vn").unwrap(),
            content: RenderedEmail {
                subject: "Xác nhận đăng ký lớp".into(),
                html: "<p>Chào An</p>".into(),
                text: "Chào An".into(),
            },
        }
    }

    #[test]
    fn stems_never_leave_the_outbox() {
        let plain = EventId::parse("0d079340-135a-c8c6-95c2-41fb8f496c53").unwrap();
        assert_eq!(file_stem(&plain), "0d079340-135a-c8c6-95c2-41fb8f496c53");
        let sneaky = EventId::parse("../../etc/passwd").unwrap();
        let stem = file_stem(&sneaky);
        assert!(!stem.contains('/') && !stem.contains(".."), "{stem}");
        assert!(stem.starts_with("etcpasswd-"), "{stem}");
        let long = EventId::parse("é".repeat(256)).unwrap();
        assert!(file_stem(&long).len() <= 64 + 1 + 24);
        // Two ids that reduce to the same safe characters still get different files.
        let a = EventId::parse("a/b").unwrap();
        let b = EventId::parse("a.b").unwrap();
        assert_ne!(file_stem(&a), file_stem(&b));
    }

    #[tokio::test]
    async fn writes_one_whole_file_per_event_and_keeps_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxMailer::in_data_dir(dir.path());
        let first = outbox.send(&email("e-1")).await.unwrap();
        let path = first.outbox_file.clone().unwrap();
        assert_eq!(path, dir.path().join("outbox/e-1.eml"));
        let written = std::fs::read(&path).unwrap();
        let mut changed = email("e-1");
        changed.content.text = "something else".into();
        let second = outbox.send(&changed).await.unwrap();
        assert_eq!(second, first);
        assert_eq!(std::fs::read(&path).unwrap(), written, "the first file stands");
        let names: Vec<_> =
            std::fs::read_dir(outbox.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("e-1.eml")], "no temp files left behind");
    }

    #[test]
    fn eml_is_multipart_with_an_encoded_subject() {
        let raw = String::from_utf8(build_eml(&email("e-1"), "e-1@x.local", 1_795_168_800).unwrap()).unwrap();
        assert!(raw.contains("To: <an.nguyen@example.edu.vn>\r\n"), "{raw}");
        assert!(raw.contains("Message-ID: <e-1@x.local>\r\n"), "{raw}");
        assert!(raw.contains("Subject: =?utf-8?"), "non-ASCII subject is an encoded-word: {raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("Date: Fri, 20 Nov 2026 10:00:00 +0000"), "{raw}");
    }

    #[tokio::test]
    async fn an_unwritable_outbox_is_an_error_not_a_lost_email() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the outbox folder should be.
        std::fs::write(dir.path().join(OUTBOX_DIR), b"not a folder").unwrap();
        let err = OutboxMailer::in_data_dir(dir.path()).send(&email("e-1")).await.unwrap_err();
        assert!(matches!(err, MailError::Outbox { .. }), "{err}");
    }
}
