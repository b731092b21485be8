//! The admin web: server-rendered pages (askama templates in `web/templates/`) with a small
//! embedded bundle (`web/dist/`: htmx, uPlot and our scripts, built by esbuild), served by
//! the host itself. Nothing is fetched from another origin.
//!
//! Every page is a route in the admin's one table (`admin::routes`), behind the same guard
//! and roles as the JSON API, and reads through the same role-checked handlers: a page is
//! one more view of what `/api/…` answers, never a second path to the store. Changes are
//! made by the page's scripts calling the JSON API with the session's CSRF token, so every
//! change is the API's, with its checks and its audit entry.

mod alerts;
mod dashboard;
mod directory;
mod ops;
mod rules;

use crate::admin::auth::{Access, Principal, Via};
use crate::admin::{AdminState, ApiError};
use crate::store::accounts::Role;
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get};

/// The embedded bundle.
const APP_JS: &[u8] = include_bytes!("../../../web/dist/app.js");
const APP_CSS: &[u8] = include_bytes!("../../../web/dist/app.css");

/// Where the web lives; the guard sends an anonymous browser here to log in.
pub const LOGIN_PATH: &str = "/web/login";

type Route = (Method, &'static str, Access, MethodRouter<AdminState>);

/// Every page with who may open it.
pub fn routes() -> Vec<Route> {
    use crate::admin::auth::{ADMIN, SIGNED_IN, STAFF};
    let mut v: Vec<Route> = vec![
        (Method::GET, "/assets/app.js", Access::Public, get(app_js)),
        (Method::GET, "/assets/app.css", Access::Public, get(app_css)),
        (Method::GET, "/", Access::Public, get(root)),
        (Method::GET, LOGIN_PATH, Access::Public, get(login_page)),
        (Method::GET, "/web", SIGNED_IN, get(home)),
    ];
    v.extend(rules::routes(STAFF, ADMIN));
    v.extend(alerts::routes(STAFF));
    v.extend(directory::routes(STAFF, ADMIN));
    v.extend(dashboard::routes(STAFF));
    v.extend(ops::routes(ADMIN));
    v
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Embedded in this binary: it changes only with the binary.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn root() -> Redirect {
    Redirect::to("/web")
}

/// `/web`: admins land on the rules, clinicians on their patients' dashboard.
async fn home(Extension(p): Extension<Principal>) -> Redirect {
    match p.role() {
        Role::Admin => Redirect::to("/web/alerts"),
        Role::Clinician => Redirect::to("/web/dashboard"),
        Role::Device => Redirect::to(LOGIN_PATH),
    }
}

// ---- layout ----

/// What every page's frame needs: who is signed in, their CSRF token, the navigation.
pub struct Layout {
    pub title: String,
    pub username: String,
    pub role: &'static str,
    pub is_admin: bool,
    pub csrf: String,
    pub unit: &'static str,
    /// The navigation entry to mark current.
    pub section: &'static str,
}

impl Layout {
    pub fn new(p: &Principal, title: impl Into<String>, section: &'static str) -> Self {
        Layout {
            title: title.into(),
            username: p
                .user
                .as_ref()
                .map(|u| u.username.clone())
                .unwrap_or_else(|| p.actor.id.clone()),
            role: match p.role() {
                Role::Admin => "admin",
                Role::Clinician => "clinician",
                Role::Device => "device",
            },
            is_admin: p.role() == Role::Admin,
            csrf: match &p.via {
                Via::Session { csrf, .. } => csrf.clone(),
                // A token in a browser is unusual; its requests carry the token itself.
                Via::Token { .. } => String::new(),
            },
            // The user's own choice (`PUT /api/me/preferences`); mg/dL until they make one.
            unit: p
                .user
                .as_ref()
                .and_then(|u| u.glucose_unit)
                .unwrap_or_default()
                .as_str(),
            section,
        }
    }

    /// The navigation, by role: (href, label, whether it is the current section).
    pub fn nav(&self) -> Vec<(&'static str, &'static str, bool)> {
        let mut v = vec![
            ("dashboard", "/web/dashboard", "Dashboard"),
            ("alerts", "/web/alerts", "Alerts"),
            ("patients", "/web/patients", "Patients"),
            ("rules", "/web/rules", "Rules"),
        ];
        if self.is_admin {
            v.extend([
                ("devices", "/web/devices", "Devices"),
                ("subscribers", "/web/subscribers", "Subscribers"),
                ("ops", "/web/ops", "Operations"),
                ("audit", "/web/audit", "Audit"),
            ]);
        }
        v.into_iter()
            .map(|(key, href, label)| (href, label, key == self.section))
            .collect()
    }
}

/// A rendered page, or the error page with the error's status.
pub fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => WebError(ApiError::Internal(format!("template: {e}"))).into_response(),
    }
}

/// An API error shown as a page.
pub struct WebError(pub ApiError);

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        WebError(e)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    reason: String,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let api = self.0.into_response();
        let status = api.status();
        if status == StatusCode::UNAUTHORIZED {
            return Redirect::to(LOGIN_PATH).into_response();
        }
        // The API error already logged what must be logged; the page shows its message (an
        // internal error's is already the generic one).
        let message = match status {
            StatusCode::NOT_FOUND => "There is nothing here, or it is not yours to see.".to_owned(),
            StatusCode::FORBIDDEN => "Your role may not open this page.".to_owned(),
            StatusCode::INTERNAL_SERVER_ERROR => {
                "Something failed on the server; see its log.".to_owned()
            }
            _ => "The request could not be answered.".to_owned(),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error").to_owned(),
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, "error").into_response(),
        }
    }
}

pub type Page = Result<Response, WebError>;

/// The guard's answer to a browser that may not open a page: anonymous visitors go to the
/// login page (and back afterwards), others get the error page.
pub fn denied_page(path_and_query: &str, unauthenticated: bool) -> Response {
    if unauthenticated {
        let next: String = url_escape(path_and_query);
        return Redirect::to(&format!("{LOGIN_PATH}?next={next}")).into_response();
    }
    WebError(ApiError::Forbidden(String::new())).into_response()
}

/// Whether a request is for a page (the guard answers those with pages, not JSON).
pub fn is_page(path: &str) -> bool {
    path == "/web" || path.starts_with("/web/")
}

/// Whether a route is the JSON API's (in the OpenAPI document) rather than the web's: pages,
/// their assets and `/`.
pub fn is_api(path: &str) -> bool {
    !(is_page(path) || path == "/" || path.starts_with("/assets/"))
}

/// Percent-encodes everything but unreserved characters and `/`.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---- login ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(
    State(_): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    // Only a local page may follow the login (no open redirect).
    let next = q
        .next
        .filter(|n| is_page(n) && !n.starts_with("//"))
        .unwrap_or_else(|| "/web".to_owned());
    render(LoginPage { next })
}

// ---- shared display helpers for templates ----

/// Milliseconds as an ISO-8601 UTC instant, for `<time datetime>` (the page shows it in the
/// viewer's zone).
pub fn iso(ms: i64) -> String {
    crate::model::format_ms(ms)
}

pub fn opt_iso(ms: Option<i64>) -> String {
    ms.map(iso).unwrap_or_default()
}

/// One page of a list: where it starts and whether there are more.
pub struct Paging {
    pub offset: u32,
    pub limit: u32,
    pub total: u64,
    pub query: String,
}

impl Paging {
    pub fn prev(&self) -> Option<u32> {
        (self.offset > 0).then(|| self.offset.saturating_sub(self.limit))
    }
    pub fn next(&self) -> Option<u32> {
        (u64::from(self.offset) + u64::from(self.limit) < self.total)
            .then(|| self.offset + self.limit)
    }
    pub fn first_shown(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            u64::from(self.offset) + 1
        }
    }
    pub fn last_shown(&self) -> u64 {
        (u64::from(self.offset) + u64::from(self.limit)).min(self.total)
    }
    pub fn q_escaped(&self) -> String {
        url_escape(&self.query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_redirect_keeps_the_page_and_escapes_it() {
        assert_eq!(
            url_escape("/web/alerts?x=1&y=a b"),
            "/web/alerts%3Fx%3D1%26y%3Da%20b"
        );
    }

    #[test]
    fn only_web_paths_are_pages() {
        assert!(is_page("/web"));
        assert!(is_page("/web/rules"));
        assert!(!is_page("/webhook"));
        assert!(!is_page("/api/rules"));
    }

    #[test]
    fn paging_knows_its_neighbours() {
        let p = Paging {
            offset: 50,
            limit: 50,
            total: 120,
            query: String::new(),
        };
        assert_eq!((p.prev(), p.next()), (Some(0), Some(100)));
        assert_eq!((p.first_shown(), p.last_shown()), (51, 100));
        let last = Paging { offset: 100, ..p };
        assert_eq!(last.next(), None);
    }
}
