//! The confirmation emails as people get them: snapshots of every language and
//! body, with and without names, plus the `.eml` file the outbox writes.
//! Review changes with `cargo insta review` (or read the `.snap.new` files).

use event_consumer::Language;
use event_consumer::mail::outbox::build_eml;
use event_consumer::mail::{OutgoingEmail, render_enrollment};
use schemas::events::{DisplayName, StudentEnrolled};
use schemas::{EmailAddress, EventId};

fn enrolled(student_name: Option<&str>, class_name: Option<&str>) -> StudentEnrolled {
    StudentEnrolled {
        student_id: "1024".parse().unwrap(),
        class_id: "math-101".parse().unwrap(),
        email: EmailAddress::parse("an.nguyen@example.edu.vn").unwrap(),
        student_name: student_name.map(|n| DisplayName::parse("studentName", n).unwrap()),
        class_name: class_name.map(|n| DisplayName::parse("className", n).unwrap()),
    }
}

#[test]
fn vietnamese_with_names() {
    let email =
        render_enrollment(Language::Vi, &enrolled(Some("Nguyễn Văn An"), Some("Toán cao cấp 1"))).unwrap();
    assert_eq!(email.subject, "Xác nhận đăng ký lớp");
    insta::assert_snapshot!("vi_named_html", email.html);
    insta::assert_snapshot!("vi_named_text", email.text);
}

#[test]
fn vietnamese_without_names_falls_back_to_the_class_id() {
    let email = render_enrollment(Language::Vi, &enrolled(None, None)).unwrap();
    insta::assert_snapshot!("vi_anonymous_html", email.html);
    insta::assert_snapshot!("vi_anonymous_text", email.text);
}

#[test]
fn english_with_names() {
    let email = render_enrollment(Language::En, &enrolled(Some("An Nguyen"), Some("Calculus 1"))).unwrap();
    assert_eq!(email.subject, "Enrollment confirmed");
    insta::assert_snapshot!("en_named_html", email.html);
    insta::assert_snapshot!("en_named_text", email.text);
}

#[test]
fn english_without_names() {
    let email = render_enrollment(Language::En, &enrolled(None, None)).unwrap();
    insta::assert_snapshot!("en_anonymous_text", email.text);
}

#[test]
fn names_are_escaped_in_html_and_kept_verbatim_in_text() {
    let name = r#"<script>alert("x")</script> & Co"#;
    let email = render_enrollment(Language::Vi, &enrolled(Some(name), Some("<b>Lớp</b>"))).unwrap();
    assert!(!email.html.contains("<script>") && !email.html.contains("<b>Lớp"), "{}", email.html);
    assert!(
        email.html.contains("&#60;script&#62;") || email.html.contains("&lt;script&gt;"),
        "{}",
        email.html
    );
    assert!(email.html.contains("&#38; Co") || email.html.contains("&amp; Co"), "{}", email.html);
    assert!(email.text.contains(name), "plain text shows the name as written: {}", email.text);
}

#[test]
fn the_outbox_file_is_a_standard_multipart_message() {
    let content =
        render_enrollment(Language::Vi, &enrolled(Some("Nguyễn Văn An"), Some("Toán cao cấp 1"))).unwrap();
    let email = OutgoingEmail {
        event_id: EventId::parse("0d079340-135a-c8c6-95c2-41fb8f496c53").unwrap(),
        recipient: None,
        from: EmailAddress::parse("no-reply@student-system.local").unwrap(),
        to: EmailAddress::parse("an.nguyen@example.edu.vn").unwrap(),
        content,
    };
    let raw = String::from_utf8(
        build_eml(&email, "0d079340-135a-c8c6-95c2-41fb8f496c53@outbox.student-system.local", 1_795_168_800)
            .unwrap(),
    )
    .unwrap();
    // The MIME boundary is random per message; pin it for the snapshot.
    let boundary = raw
        .split("boundary=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a multipart boundary")
        .to_owned();
    insta::assert_snapshot!("vi_named_eml", raw.replace(&boundary, "BOUNDARY").replace("\r\n", "\n"));
}
