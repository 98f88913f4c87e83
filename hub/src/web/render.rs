//! Server-rendered pages: the Tera templates (compiled into the binary, autoescaped), the
//! layout every page shares, flash messages, and the page response.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Serialize;

use super::cookies;
use super::current_user::CurrentUser;

/// Every template, by name. Names end in `.html`, so Tera escapes everything by default.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "pages/classes/usage.html",
        include_str!("../../templates/pages/classes/usage.html"),
    ),
    (
        "pages/admin/usage.html",
        include_str!("../../templates/pages/admin/usage.html"),
    ),
    ("base.html", include_str!("../../templates/base.html")),
    (
        "partials/vm_tile.html",
        include_str!("../../templates/partials/vm_tile.html"),
    ),
    (
        "partials/plugin_settings.html",
        include_str!("../../templates/partials/plugin_settings.html"),
    ),
    (
        "partials/plugin_notes.html",
        include_str!("../../templates/partials/plugin_notes.html"),
    ),
    (
        "partials/gauge.html",
        include_str!("../../templates/partials/gauge.html"),
    ),
    (
        "pages/error.html",
        include_str!("../../templates/pages/error.html"),
    ),
    (
        "pages/auth/login.html",
        include_str!("../../templates/pages/auth/login.html"),
    ),
    (
        "pages/portal/vms.html",
        include_str!("../../templates/pages/portal/vms.html"),
    ),
    (
        "pages/portal/vm.html",
        include_str!("../../templates/pages/portal/vm.html"),
    ),
    (
        "pages/portal/console.html",
        include_str!("../../templates/pages/portal/console.html"),
    ),
    (
        "pages/portal/templates.html",
        include_str!("../../templates/pages/portal/templates.html"),
    ),
    (
        "pages/admin/adopt.html",
        include_str!("../../templates/pages/admin/adopt.html"),
    ),
    (
        "pages/portal/template_new.html",
        include_str!("../../templates/pages/portal/template_new.html"),
    ),
    (
        "pages/portal/profile.html",
        include_str!("../../templates/pages/portal/profile.html"),
    ),
    (
        "pages/classes/list.html",
        include_str!("../../templates/pages/classes/list.html"),
    ),
    (
        "pages/classes/class.html",
        include_str!("../../templates/pages/classes/class.html"),
    ),
    (
        "pages/classes/join.html",
        include_str!("../../templates/pages/classes/join.html"),
    ),
    (
        "pages/classes/roster.html",
        include_str!("../../templates/pages/classes/roster.html"),
    ),
    (
        "pages/admin/nodes.html",
        include_str!("../../templates/pages/admin/nodes.html"),
    ),
    (
        "pages/admin/join_tokens.html",
        include_str!("../../templates/pages/admin/join_tokens.html"),
    ),
    (
        "pages/admin/users.html",
        include_str!("../../templates/pages/admin/users.html"),
    ),
    (
        "pages/admin/plugins.html",
        include_str!("../../templates/pages/admin/plugins.html"),
    ),
    (
        "pages/admin/plugin_guide.html",
        include_str!("../../templates/pages/admin/plugin_guide.html"),
    ),
    (
        "pages/admin/consoles.html",
        include_str!("../../templates/pages/admin/consoles.html"),
    ),
    (
        "pages/admin/audit.html",
        include_str!("../../templates/pages/admin/audit.html"),
    ),
];

static TERA: LazyLock<tera::Tera> = LazyLock::new(|| {
    let mut tera = tera::Tera::default();
    tera.add_raw_templates(TEMPLATES.iter().copied())
        .expect("the built-in templates are valid");
    tera
});

/// A one-shot message shown at the top of the next page.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Flash {
    /// `ok` or `error`.
    pub kind: String,
    pub text: String,
}

/// The signed-in user as the layout shows them.
#[derive(Debug, Clone, Serialize)]
struct LayoutUser {
    username: String,
    role: &'static str,
    is_admin: bool,
    is_staff: bool,
}

/// What the shared layout needs: who is signed in, the CSRF token for forms, the active
/// navigation entry, the title, and a flash message.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Layout {
    user: Option<LayoutUser>,
    csrf: String,
    nav: &'static str,
    title: String,
    flash: Option<Flash>,
}

impl Layout {
    pub(crate) fn new(
        user: Option<&CurrentUser>,
        headers: &HeaderMap,
        nav: &'static str,
        title: &str,
    ) -> Self {
        Self {
            user: user.map(|user| LayoutUser {
                username: user.viewer.username.clone(),
                role: user.viewer.role.as_str(),
                is_admin: user.viewer.is_admin(),
                is_staff: user.viewer.is_staff(),
            }),
            csrf: user
                .map(|user| user.csrf_token().to_owned())
                .unwrap_or_default(),
            nav,
            title: title.to_owned(),
            flash: read_flash(headers),
        }
    }

    /// For the login page, whose form carries the double-submit token instead.
    pub(crate) fn with_csrf(mut self, csrf: String) -> Self {
        self.csrf = csrf;
        self
    }
}

fn read_flash(headers: &HeaderMap) -> Option<Flash> {
    let value = cookies::percent_decode(cookies::get(headers, cookies::FLASH)?);
    let (kind, text) = value.split_once(':')?;
    let kind = if kind == "ok" { "ok" } else { "error" };
    Some(Flash {
        kind: kind.to_owned(),
        text: text.to_owned(),
    })
}

/// A rendered page. It clears any flash it showed and is never cached.
#[derive(Debug)]
pub(crate) struct Page {
    html: String,
    clear_flash: bool,
    set_cookies: Vec<String>,
}

/// A template that could not be rendered (a bug: every template is compiled in tests).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RenderError(String);

impl Page {
    /// Renders `template` with the layout and the page's own data (as `page`).
    pub(crate) fn render<T: Serialize>(
        template: &str,
        layout: &Layout,
        page: &T,
    ) -> Result<Self, RenderError> {
        let mut context = tera::Context::new();
        context.insert("layout", layout);
        context.insert("page", page);
        let html = TERA
            .render(template, &context)
            .map_err(|err| RenderError(format!("rendering {template}: {err:?}")))?;
        Ok(Self {
            html,
            clear_flash: layout.flash.is_some(),
            set_cookies: Vec::new(),
        })
    }

    pub(crate) fn with_cookie(mut self, cookie: String) -> Self {
        self.set_cookies.push(cookie);
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = axum::response::Html(self.html).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let mut cookies = self.set_cookies;
        if self.clear_flash {
            cookies.push(cookies::set(cookies::FLASH, "", Some(0), false));
        }
        for cookie in cookies {
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                headers.append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

/// Redirects (303, so the browser follows with GET) and leaves a message for the next page.
pub(crate) fn redirect_with_flash(to: &str, kind: &str, text: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    // Whoever wrote the message, it reads as a sentence.
    let text = crate::text::sentence(text);
    let value = cookies::percent_encode(&format!("{kind}:{text}"));
    if let Ok(cookie) =
        HeaderValue::from_str(&cookies::set(cookies::FLASH, &value, Some(60), false))
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Serialize)]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
    detail: Option<&'a str>,
}

/// An error page's title, in words for people rather than HTTP's.
fn error_title(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible right now",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        StatusCode::BAD_GATEWAY => "A node did not answer",
        status if status.is_server_error() => "Something went wrong",
        _ => "That did not work",
    }
}

/// A small standalone error page.
/// The error page: a sentence, and for staff the technical details in a disclosure.
pub(crate) fn error_page(status: StatusCode, message: &str, detail: Option<&str>) -> String {
    let mut context = tera::Context::new();
    context.insert(
        "page",
        &ErrorPage {
            status: status.as_u16(),
            reason: error_title(status),
            message,
            detail,
        },
    );
    TERA.render("pages/error.html", &context)
        .unwrap_or_else(|err| {
            tracing::error!(?err, "cannot render the error page");
            format!("{status}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        LazyLock::force(&TERA);
        assert_eq!(TERA.get_template_names().count(), TEMPLATES.len());
    }

    #[test]
    fn error_page_escapes_the_message() {
        let page = error_page(StatusCode::NOT_FOUND, "<script>x</script>", None);
        assert!(page.contains("&lt;script&gt;"), "{page}");
        assert!(!page.contains("<script>x"));
        let page = error_page(
            StatusCode::BAD_REQUEST,
            "this invite link has expired",
            None,
        );
        assert!(page.contains("<title>That did not work"), "{page}");
        assert!(!page.contains("Bad Request"), "{page}");
    }

    #[test]
    fn flash_round_trips_through_the_cookie() {
        // Whoever wrote it, it arrives as a sentence.
        let response = redirect_with_flash("/vms", "ok", "started lab-01; IP soon");
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap();
        let value = cookie.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        assert_eq!(
            read_flash(&headers),
            Some(Flash {
                kind: "ok".into(),
                text: "Started lab-01; IP soon.".into()
            })
        );
    }
}
