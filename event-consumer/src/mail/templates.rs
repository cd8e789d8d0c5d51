//! The enrollment confirmation, rendered from compile-checked askama templates in
//! `templates/`: a template that names a missing field does not build. HTML
//! templates escape every value (a student may call themselves `<b>`); the plain
//! text ones do not need to.

use askama::Template;
use schemas::events::StudentEnrolled;

/// The language of the confirmation email (`EMAIL_LANGUAGE`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Vietnamese, the product's default.
    #[default]
    Vi,
    /// English.
    En,
}

impl From<schemas::events::ContentLanguage> for Language {
    fn from(language: schemas::events::ContentLanguage) -> Self {
        match language {
            schemas::events::ContentLanguage::Vi => Language::Vi,
            schemas::events::ContentLanguage::En => Language::En,
        }
    }
}

impl Language {
    pub fn enrollment_subject(self) -> &'static str {
        match self {
            Language::Vi => "Xác nhận đăng ký lớp",
            Language::En => "Enrollment confirmed",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Vi => "vi",
            Language::En => "en",
        }
    }
}

/// Subject and both bodies of one email.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// Bodies carry names; keep them out of logs even through `{:?}`.
impl std::fmt::Debug for RenderedEmail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedEmail")
            .field("subject", &self.subject)
            .field("html_bytes", &self.html.len())
            .field("text_bytes", &self.text.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("rendering the {language} enrollment email: {source}")]
pub struct RenderError {
    language: &'static str,
    #[source]
    source: askama::Error,
}

/// What every enrollment template sees. `class_name` falls back to the class id
/// when the app did not send a name, and then the id is not repeated in brackets.
struct EnrollmentView<'a> {
    student_name: Option<&'a str>,
    class_name: &'a str,
    class_id: &'a str,
    show_class_id: bool,
}

impl<'a> EnrollmentView<'a> {
    fn of(event: &'a StudentEnrolled) -> Self {
        let class_id = event.class_id.as_str();
        let class_name = event.class_name.as_ref().map(|n| n.as_str());
        Self {
            student_name: event.student_name.as_ref().map(|n| n.as_str()),
            class_name: class_name.unwrap_or(class_id),
            class_id,
            show_class_id: class_name.is_some_and(|name| name != class_id),
        }
    }
}

macro_rules! enrollment_template {
    ($name:ident, $path:literal) => {
        #[derive(Template)]
        #[template(path = $path)]
        struct $name<'a> {
            student_name: Option<&'a str>,
            class_name: &'a str,
            class_id: &'a str,
            show_class_id: bool,
        }

        impl<'a> From<&EnrollmentView<'a>> for $name<'a> {
            fn from(v: &EnrollmentView<'a>) -> Self {
                Self {
                    student_name: v.student_name,
                    class_name: v.class_name,
                    class_id: v.class_id,
                    show_class_id: v.show_class_id,
                }
            }
        }
    };
}

enrollment_template!(EnrollmentViHtml, "enrollment.vi.html");
enrollment_template!(EnrollmentViText, "enrollment.vi.txt");
enrollment_template!(EnrollmentEnHtml, "enrollment.en.html");
enrollment_template!(EnrollmentEnText, "enrollment.en.txt");

/// Renders the confirmation for one enrollment in `language`.
pub fn render_enrollment(language: Language, event: &StudentEnrolled) -> Result<RenderedEmail, RenderError> {
    let view = EnrollmentView::of(event);
    let wrap = |source| RenderError { language: language.as_str(), source };
    let (html, text) = match language {
        Language::Vi => (EnrollmentViHtml::from(&view).render(), EnrollmentViText::from(&view).render()),
        Language::En => (EnrollmentEnHtml::from(&view).render(), EnrollmentEnText::from(&view).render()),
    };
    Ok(RenderedEmail {
        subject: language.enrollment_subject().to_owned(),
        html: html.map_err(wrap)?,
        text: text.map_err(wrap)?,
    })
}

/// What every announcement template sees. The content is the teacher's plain text:
/// escaped in the HTML part (shown with its line breaks), verbatim in the text part.
macro_rules! announcement_template {
    ($name:ident, $path:literal) => {
        #[derive(Template)]
        #[template(path = $path)]
        struct $name<'a> {
            student_name: Option<&'a str>,
            class_name: &'a str,
            content: &'a str,
        }
    };
}

announcement_template!(AnnouncementViHtml, "announcement.vi.html");
announcement_template!(AnnouncementViText, "announcement.vi.txt");
announcement_template!(AnnouncementEnHtml, "announcement.en.html");
announcement_template!(AnnouncementEnText, "announcement.en.txt");

/// Renders one student's copy of a class announcement in `language`.
pub fn render_announcement(
    language: Language,
    class_name: &str,
    student_name: Option<&str>,
    content: &str,
) -> Result<RenderedEmail, RenderError> {
    let wrap = |source| RenderError { language: language.as_str(), source };
    let (subject, html, text) = match language {
        Language::Vi => (
            format!("Thông báo lớp {class_name}"),
            AnnouncementViHtml { student_name, class_name, content }.render(),
            AnnouncementViText { student_name, class_name, content }.render(),
        ),
        Language::En => (
            format!("Announcement: {class_name}"),
            AnnouncementEnHtml { student_name, class_name, content }.render(),
            AnnouncementEnText { student_name, class_name, content }.render(),
        ),
    };
    Ok(RenderedEmail { subject, html: html.map_err(wrap)?, text: text.map_err(wrap)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_is_escaped_in_html_and_verbatim_in_text() {
        let content = "Thi giữa kỳ <b>thứ Sáu</b> & mang \"máy tính\".\nPhòng A1";
        let email = render_announcement(Language::Vi, "Toán <1>", Some("An & Bình"), content).unwrap();
        assert_eq!(email.subject, "Thông báo lớp Toán <1>");
        assert!(
            email.html.contains(
                "Thi giữa kỳ &#60;b&#62;thứ Sáu&#60;/b&#62; &#38; mang &#34;máy tính&#34;.\nPhòng A1"
            ) || email.html.contains(
                "Thi giữa kỳ &lt;b&gt;thứ Sáu&lt;/b&gt; &amp; mang &quot;máy tính&quot;.\nPhòng A1"
            ),
            "{}",
            email.html
        );
        assert!(!email.html.contains("<b>"), "{}", email.html);
        assert!(
            email.html.contains("Chào An &#38; Bình,") || email.html.contains("Chào An &amp; Bình,"),
            "{}",
            email.html
        );
        assert!(email.text.contains(content), "{}", email.text);
        assert!(email.text.starts_with("Chào An & Bình,"), "{}", email.text);

        let email = render_announcement(Language::En, "math-101", None, "Quiz tomorrow").unwrap();
        assert_eq!(email.subject, "Announcement: math-101");
        assert!(email.text.starts_with("Hello,\n"), "{}", email.text);
        assert!(email.html.contains("Quiz tomorrow"));
    }
}
