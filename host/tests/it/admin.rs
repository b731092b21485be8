//! The admin API through its router, in-process: every route × every kind of caller
//! (anonymous, device, clinician, admin, a revoked token) against an expectation table of
//! this file's own, sessions with CSRF, clinicians confined to the patients they follow,
//! and the rule lifecycle (refused uploads, upload, enable, parameters, roll back) with the
//! stream running, each step in the audit log.

use crate::support::{self, glucose_json, plugin, rule, send_all};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use glucoguard::admin::auth::{self, Access};
use glucoguard::admin::{AdminState, router, routes};
use glucoguard::app::App;
use glucoguard::store::accounts::{AuditFilter, Role};
use glucoguard::store::prelude::*;
use std::collections::BTreeMap;
use tower::ServiceExt;

const T0: i64 = 1_764_000_000_000;
const MIN: i64 = 60_000;

fn state(app: &App) -> AdminState {
    let store: std::sync::Arc<dyn AdminStore> = app.store.clone();
    AdminState::new(store, app.handle.clone(), false)
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: serde_json::Value,
}

async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        json: serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into())),
    }
}

async fn as_token(
    app: &axum::Router,
    token: &str,
    method: Method,
    path: &str,
    body: &str,
) -> Reply {
    let bearer = support::bearer(token);
    call(
        app,
        method,
        path,
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        body.as_bytes().to_vec(),
    )
    .await
}

/// A host with the default rule, one patient followed by a clinician's subscriber row and
/// one who is not, and tokens for every kind of caller.
struct Fixture {
    app: App,
    router: axum::Router,
    device: String,
    clinician: String,
    admin: String,
    revoked: String,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = support::sqlite_host_config(
        &dir.path().join("g.db"),
        64,
        vec![rule("glucoguard_default_rule", &[])],
    );
    let app = glucoguard::app::start(&config).await.unwrap();
    support::put_dimensions(
        &app,
        serde_json::json!({
            "patients": [
                {"patient_id": 1, "first_name": "Ada", "last_name": "Followed"},
                {"patient_id": 2, "first_name": "Bo", "last_name": "Other"}
            ],
            "subscribers": [{"subscriber_id": 10, "name": "Dr Who", "role": "doctor"}],
            "subscriptions": [{"subscriber_id": 10, "patient_id": 1}]
        }),
    )
    .await;
    let user = support::clinician(&app, 10).await;
    let admin_user = auth::new_user("root", "another long password", Role::Admin, None).unwrap();
    app.store
        .create_user(&admin_user, &support::audit())
        .await
        .unwrap();
    let (_, device) = support::issue(&app, Role::Device, None).await;
    let (_, clinician) = support::issue(&app, Role::Clinician, Some(user.user_id.clone())).await;
    let (_, admin) = support::issue(&app, Role::Admin, None).await;
    let (revoked_id, revoked) = support::issue(&app, Role::Admin, None).await;
    app.store
        .revoke_token(&revoked_id, &support::audit())
        .await
        .unwrap();
    let router = router(state(&app), app.handle.embedded_source("test"));
    Fixture {
        app,
        router,
        device,
        clinician,
        admin,
        revoked,
        _dir: dir,
    }
}

/// Who may call each route: this file's own table, kept apart from the router's so that a
/// route added there without a decision here fails `every_route_answers_every_role_as_designed`.
fn expected() -> BTreeMap<(&'static str, &'static str), &'static [Role]> {
    use Role::{Admin as A, Clinician as C, Device as D};
    const PUBLIC: &[Role] = &[];
    const ADMIN: &[Role] = &[A];
    const STAFF: &[Role] = &[C, A];
    const INGEST: &[Role] = &[D, A];
    const ANY: &[Role] = &[D, C, A];
    BTreeMap::from([
        (("GET", "/health"), PUBLIC),
        // The web admin: assets and the login page are public, every other page has the
        // role its API data has.
        (("GET", "/"), PUBLIC),
        (("GET", "/assets/app.js"), PUBLIC),
        (("GET", "/assets/app.css"), PUBLIC),
        (("GET", "/web/login"), PUBLIC),
        (("GET", "/web"), ANY),
        (("GET", "/web/rules"), STAFF),
        (("GET", "/web/rules/{name}"), STAFF),
        (("POST", "/web/rules/{name}/backtest"), ADMIN),
        (("GET", "/web/alerts"), STAFF),
        (("GET", "/web/alerts/{id}"), STAFF),
        (("GET", "/web/patients"), STAFF),
        (("GET", "/web/devices"), ADMIN),
        (("GET", "/web/subscribers"), ADMIN),
        (("GET", "/web/dashboard"), STAFF),
        (("GET", "/web/patients/{id}"), STAFF),
        (("GET", "/web/patients/{id}/latest"), STAFF),
        (("GET", "/web/compare"), STAFF),
        (("GET", "/web/ops"), ADMIN),
        (("GET", "/web/audit"), ADMIN),
        (("GET", "/ready"), PUBLIC),
        (("GET", "/api/openapi.json"), PUBLIC),
        (("POST", "/api/login"), PUBLIC),
        (("POST", "/api/logout"), ANY),
        (("GET", "/api/me"), ANY),
        (("PUT", "/api/me/preferences"), ANY),
        (("GET", "/api/stats"), STAFF),
        (("GET", "/api/sinks"), ADMIN),
        (("GET", "/api/counts"), ADMIN),
        (("POST", "/api/dimensions"), ADMIN),
        (("POST", "/api/ingest"), INGEST),
        (("GET", "/api/rules"), STAFF),
        (("GET", "/api/rules/{name}/versions"), STAFF),
        (("POST", "/api/rules"), ADMIN),
        (("POST", "/api/rules/{name}/enable"), ADMIN),
        (("POST", "/api/rules/{name}/disable"), ADMIN),
        (("POST", "/api/rules/{name}/rollback"), ADMIN),
        (("PUT", "/api/rules/{name}/params"), ADMIN),
        (("PUT", "/api/rules/{name}/scope"), ADMIN),
        (("POST", "/api/rules/{name}/backtest"), ADMIN),
        (("POST", "/api/rules/{name}/shadow"), ADMIN),
        (("DELETE", "/api/rules/{name}/shadow"), ADMIN),
        (
            ("GET", "/api/rules/{name}/versions/{version}/shadow-alerts"),
            ADMIN,
        ),
        (
            ("POST", "/api/rules/{name}/versions/{version}/release"),
            ADMIN,
        ),
        (("GET", "/api/patients"), STAFF),
        (("POST", "/api/patients"), ADMIN),
        (("GET", "/api/patients/{id}"), STAFF),
        (("PUT", "/api/patients/{id}"), ADMIN),
        (("DELETE", "/api/patients/{id}"), ADMIN),
        (("GET", "/api/patients/{id}/followers"), STAFF),
        (("GET", "/api/devices"), STAFF),
        (("POST", "/api/devices"), ADMIN),
        (("GET", "/api/devices/{id}"), STAFF),
        (("PUT", "/api/devices/{id}"), ADMIN),
        (("DELETE", "/api/devices/{id}"), ADMIN),
        (("GET", "/api/subscribers"), ADMIN),
        (("POST", "/api/subscribers"), ADMIN),
        (("GET", "/api/subscribers/{id}"), ADMIN),
        (("PUT", "/api/subscribers/{id}"), ADMIN),
        (("DELETE", "/api/subscribers/{id}"), ADMIN),
        (("POST", "/api/subscriptions"), ADMIN),
        (
            ("DELETE", "/api/subscriptions/{subscriber}/{patient}"),
            ADMIN,
        ),
        (("GET", "/api/alerts"), STAFF),
        (("GET", "/api/alerts/live"), STAFF),
        (("GET", "/api/alerts/{id}"), STAFF),
        (("POST", "/api/alerts/{id}/acknowledge"), STAFF),
        (("POST", "/api/alerts/{id}/resolve"), STAFF),
        (("POST", "/api/alerts/{id}/note"), STAFF),
        (("GET", "/api/dead-letters"), ADMIN),
        (("POST", "/api/dead-letters/{fingerprint}/replay"), ADMIN),
        (("GET", "/api/rule-faults"), ADMIN),
        (("GET", "/api/users"), ADMIN),
        (("POST", "/api/users"), ADMIN),
        (("PUT", "/api/users/{name}"), ADMIN),
        (("GET", "/api/tokens"), ADMIN),
        (("POST", "/api/tokens"), ADMIN),
        (("DELETE", "/api/tokens/{id}"), ADMIN),
        (("GET", "/api/audit"), ADMIN),
        (("GET", "/api/dashboard/patients"), STAFF),
        (("GET", "/api/dashboard/patients/{id}/series"), STAFF),
        (("GET", "/api/dashboard/patients/{id}/agp"), STAFF),
        (("GET", "/api/dashboard/patients/{id}/metrics"), STAFF),
        (("GET", "/api/dashboard/patients/{id}/latest"), STAFF),
        (("GET", "/api/dashboard/daily"), STAFF),
    ])
}

/// A concrete path for a route pattern: ids that exist but that no call here changes for
/// good (patient 2, not followed by the clinician; a made-up alert and token).
fn concrete(path: &str) -> String {
    path.replace("{name}", "default-glucose")
        .replace("{version}", "1.0.0")
        .replace("{subscriber}", "10")
        .replace("{patient}", "2")
        .replace("{id}", "2")
        .replace("{fingerprint}", "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_designed() {
    let f = fixture().await;
    let expected = expected();
    let table: Vec<(String, &'static str, Access)> =
        routes(state(&f.app), f.app.handle.embedded_source("t"))
            .into_iter()
            .map(|r| (r.method.to_string(), r.path, r.access))
            .collect();
    // The router's table and this one name the same routes, with the same rules.
    let served: std::collections::BTreeSet<(String, &str)> =
        table.iter().map(|(m, p, _)| (m.clone(), *p)).collect();
    let decided: std::collections::BTreeSet<(String, &str)> = expected
        .keys()
        .map(|(m, p)| ((*m).to_owned(), *p))
        .collect();
    assert_eq!(
        served, decided,
        "a route without an access decision (or a stale one)"
    );
    for (m, p, access) in &table {
        let roles = expected[&(m.as_str(), *p)];
        match access {
            Access::Public => assert!(roles.is_empty(), "{m} {p} is public, expected {roles:?}"),
            Access::Roles(r) => {
                let mut got = r.to_vec();
                got.sort();
                let mut want = roles.to_vec();
                want.sort();
                assert_eq!(got, want, "{m} {p}");
            }
        }
    }
    let callers: [(&str, Option<&str>, Option<Role>); 5] = [
        ("anonymous", None, None),
        ("revoked token", Some(&f.revoked), None),
        ("device", Some(&f.device), Some(Role::Device)),
        ("clinician", Some(&f.clinician), Some(Role::Clinician)),
        ("admin", Some(&f.admin), Some(Role::Admin)),
    ];
    let mut checked = 0;
    for (m, p, _) in &table {
        let roles = expected[&(m.as_str(), *p)];
        let method: Method = m.parse().unwrap();
        // Logging out ends nothing for a token, but keep it last all the same.
        for (who, token, role) in &callers {
            let path = concrete(p);
            let mut headers = vec![("content-type", "application/json")];
            let bearer;
            if let Some(t) = token {
                bearer = support::bearer(t);
                headers.push(("authorization", &bearer));
            }
            let reply = call(&f.router, method.clone(), &path, &headers, b"{}".to_vec()).await;
            let status = reply.status;
            let denied = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
            if roles.is_empty() {
                // Public: nobody is turned away for who they are (a revoked token included).
                assert!(!denied, "{who} {m} {path}: {status} {}", reply.json);
            } else {
                match role {
                    // A page sends an anonymous browser to the login page, and back after.
                    None if glucoguard::web::is_page(&path) => {
                        assert_eq!(status, StatusCode::SEE_OTHER, "{who} {m} {path}");
                        let to = reply.headers["location"].to_str().unwrap();
                        assert!(to.starts_with("/web/login?next="), "{who} {m} {path}: {to}");
                    }
                    None => assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "{who} {m} {path}: {}",
                        reply.json
                    ),
                    Some(r) if roles.contains(r) => {
                        assert!(!denied, "{who} {m} {path}: {status} {}", reply.json)
                    }
                    Some(_) => assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{who} {m} {path}: {}",
                        reply.json
                    ),
                }
                if status == StatusCode::UNAUTHORIZED {
                    assert!(reply.headers.contains_key("www-authenticate"));
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, table.len() * callers.len());
    // An unknown route is refused like any other missing thing, for everyone.
    let r = call(&f.router, Method::GET, "/api/nope", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    support::stop(f.app).await;
}

/// Logs `user` in and answers (cookie, CSRF token).
async fn session(f: &Fixture, user: &str, password: &str) -> (String, String) {
    let ok = call(
        &f.router,
        Method::POST,
        "/api/login",
        &[("content-type", "application/json")],
        serde_json::to_vec(&serde_json::json!({"username": user, "password": password})).unwrap(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.json);
    let cookie = ok.headers["set-cookie"].to_str().unwrap();
    (
        cookie.split(';').next().unwrap().to_owned(),
        ok.json["csrf_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_glucose_unit_is_kept_with_their_account_for_every_browser() {
    let f = fixture().await;
    let (cookie, csrf) = session(&f, "doc", "a long enough password").await;
    let page_unit = |cookie: String| {
        let router = f.router.clone();
        async move {
            let page = call(
                &router,
                Method::GET,
                "/web/alerts",
                &[("cookie", &cookie)],
                vec![],
            )
            .await;
            assert_eq!(page.status, StatusCode::OK);
            let html = page.json.as_str().unwrap().to_owned();
            let at = html.find("data-unit=\"").expect("the body names the unit") + 11;
            html[at..at + html[at..].find('"').unwrap()].to_owned()
        }
    };
    assert_eq!(page_unit(cookie.clone()).await, "mg/dL", "the default");
    let set = |body: &'static str, csrf: Option<&str>| {
        let router = f.router.clone();
        let cookie = cookie.clone();
        let csrf = csrf.map(str::to_owned);
        async move {
            let mut headers = vec![
                ("cookie", cookie.as_str()),
                ("content-type", "application/json"),
            ];
            if let Some(c) = &csrf {
                headers.push((auth::CSRF_HEADER, c.as_str()));
            }
            call(
                &router,
                Method::PUT,
                "/api/me/preferences",
                &headers,
                body.as_bytes().to_vec(),
            )
            .await
        }
    };
    // A change like any other: the CSRF token is required, unknown units and fields refused.
    assert_eq!(
        set(r#"{"glucose_unit":"mmol/L"}"#, None).await.status,
        StatusCode::FORBIDDEN
    );
    for bad in [
        r#"{"glucose_unit":"mmol"}"#,
        r#"{"glucose_unit":"mmol/L","x":1}"#,
        "{}",
    ] {
        assert_eq!(
            set(bad, Some(&csrf)).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let ok = set(r#"{"glucose_unit":"mmol/L"}"#, Some(&csrf)).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.json);
    // Another browser: a new session of the same user shows mmol/L; another user does not.
    let (other_browser, _) = session(&f, "doc", "a long enough password").await;
    assert_eq!(page_unit(other_browser.clone()).await, "mmol/L");
    let me = call(
        &f.router,
        Method::GET,
        "/api/me",
        &[("cookie", &other_browser)],
        vec![],
    )
    .await;
    assert_eq!(me.json["glucose_unit"], "mmol/L");
    let (root, _) = session(&f, "root", "another long password").await;
    assert_eq!(
        page_unit(root).await,
        "mg/dL",
        "one user's choice is theirs alone"
    );
    // A token acting for no account has no preferences to keep.
    let r = call(
        &f.router,
        Method::PUT,
        "/api/me/preferences",
        &[
            ("authorization", &support::bearer(&f.admin)),
            ("content-type", "application/json"),
        ],
        br#"{"glucose_unit":"mmol/L"}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    // Audited with before and after.
    let audit = f
        .app
        .store
        .audit_log(&AuditFilter {
            action: Some("user.preferences".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].entry.actor, "user:doc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_need_the_csrf_token_for_changes_and_logins_are_throttled() {
    let f = fixture().await;
    let login = |user: &'static str, pw: &'static str| {
        let router = f.router.clone();
        async move {
            call(
                &router,
                Method::POST,
                "/api/login",
                &[("content-type", "application/json")],
                serde_json::to_vec(&serde_json::json!({"username": user, "password": pw})).unwrap(),
            )
            .await
        }
    };
    let ok = login("ROOT", "another long password").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.json);
    let set_cookie = ok.headers["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "no TLS here: {set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = ok.json["csrf_token"].as_str().unwrap().to_owned();
    // Reads need only the cookie.
    let me = call(
        &f.router,
        Method::GET,
        "/api/me",
        &[("cookie", &cookie)],
        vec![],
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["actor"], "user:root");
    // A change without the CSRF token, with a wrong one, or from another site is refused.
    let body = br#"{"patient_id": 3, "first_name": "Cy", "last_name": "New"}"#.to_vec();
    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![("cookie", cookie.as_str()), (auth::CSRF_HEADER, "wrong")],
        vec![
            ("cookie", cookie.as_str()),
            (auth::CSRF_HEADER, csrf.as_str()),
            ("sec-fetch-site", "cross-site"),
        ],
    ] {
        let r = call(
            &f.router,
            Method::POST,
            "/api/patients",
            &headers,
            body.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}: {}", r.json);
    }
    assert!(
        f.app.store.patient(3).await.unwrap().is_none(),
        "nothing was created"
    );
    let r = call(
        &f.router,
        Method::POST,
        "/api/patients",
        &[
            ("cookie", &cookie),
            (auth::CSRF_HEADER, &csrf),
            ("sec-fetch-site", "same-origin"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    // Logging out ends the session: the cookie no longer works.
    let out = call(
        &f.router,
        Method::POST,
        "/api/logout",
        &[("cookie", &cookie), (auth::CSRF_HEADER, &csrf)],
        vec![],
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let me = call(
        &f.router,
        Method::GET,
        "/api/me",
        &[("cookie", &cookie)],
        vec![],
    )
    .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    // Wrong passwords: the same answer for an unknown user, then throttled, even for the
    // right password, with Retry-After.
    let unknown = login("nobody", "whatever password").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    for _ in 0..5 {
        let r = login("doc", "a wrong password!").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.json["error"], "wrong username or password");
    }
    let throttled = login("doc", "a long enough password").await;
    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        throttled.json
    );
    assert!(throttled.headers.contains_key("retry-after"));
    // The audit log holds the logins and the patient created through the session, by name.
    let log = f
        .app
        .store
        .audit_log(&AuditFilter::default())
        .await
        .unwrap();
    assert!(
        log.iter()
            .any(|e| e.entry.action == "session.login" && e.entry.actor == "user:root")
    );
    assert!(log.iter().any(|e| e.entry.action == "patient.create"
        && e.entry.actor == "user:root"
        && e.entry.target == "patient:3"));
    support::stop(f.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinician_sees_only_the_patients_they_follow() {
    let f = fixture().await;
    // Readings of both patients, each alerting.
    send_all(
        &f.app,
        [
            glucose_json("c-1", 1, T0, 180.0),
            glucose_json("c-2", 2, T0 + MIN, 190.0),
        ],
    )
    .await;
    let c = &f.clinician;
    let list = as_token(&f.router, c, Method::GET, "/api/patients", "").await;
    assert_eq!(list.status, StatusCode::OK);
    let ids: Vec<u64> = list.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["patient_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1]);
    assert_eq!(list.json["total"], 1);
    assert_eq!(
        as_token(&f.router, c, Method::GET, "/api/patients/2", "")
            .await
            .status,
        StatusCode::NOT_FOUND,
        "another patient does not exist for this clinician"
    );
    assert_eq!(
        as_token(&f.router, c, Method::GET, "/api/patients/1", "")
            .await
            .status,
        StatusCode::OK
    );
    let alerts = as_token(&f.router, c, Method::GET, "/api/alerts", "").await;
    let patients: Vec<u64> = alerts
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["patient_id"].as_u64().unwrap())
        .collect();
    assert_eq!(patients, vec![1], "{}", alerts.json);
    // Asking for the other patient's alerts by filter gives nothing either.
    let other = as_token(&f.router, c, Method::GET, "/api/alerts?patient_id=2", "").await;
    assert_eq!(other.json, serde_json::json!([]));
    // The admin sees both; the clinician cannot act on the other patient's alert.
    let all = as_token(&f.router, &f.admin, Method::GET, "/api/alerts", "").await;
    assert_eq!(all.json.as_array().unwrap().len(), 2);
    let foreign = all
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["patient_id"] == 2)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = all
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["patient_id"] == 1)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = as_token(
        &f.router,
        c,
        Method::POST,
        &format!("/api/alerts/{foreign}/acknowledge"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Their own: acknowledged with a note, then resolved; acknowledging twice is a conflict.
    let r = as_token(
        &f.router,
        c,
        Method::POST,
        &format!("/api/alerts/{mine}/acknowledge"),
        r#"{"note": "called the patient"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["status"], "acknowledged");
    let again = as_token(
        &f.router,
        c,
        Method::POST,
        &format!("/api/alerts/{mine}/acknowledge"),
        "",
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.json);
    let r = as_token(
        &f.router,
        c,
        Method::POST,
        &format!("/api/alerts/{mine}/resolve"),
        "",
    )
    .await;
    assert_eq!(r.json["status"], "resolved");
    let detail = as_token(
        &f.router,
        c,
        Method::GET,
        &format!("/api/alerts/{mine}"),
        "",
    )
    .await;
    let events: Vec<&str> = detail.json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["acknowledged", "resolved"]);
    assert_eq!(detail.json["events"][0]["note"], "called the patient");
    assert!(
        detail.json["events"][0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("token:")
    );
    support::stop(f.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_uploads_are_checked_and_the_lifecycle_runs_with_the_stream_and_is_audited() {
    let f = fixture().await;
    let a = &f.admin;
    let upload = |bytes: Vec<u8>| {
        let router = f.router.clone();
        let bearer = support::bearer(a);
        async move {
            call(
                &router,
                Method::POST,
                "/api/rules",
                &[("authorization", &bearer)],
                bytes,
            )
            .await
        }
    };
    let versions_before = f.app.store.rule_versions().await.unwrap().len();
    let oversized = vec![0u8; glucoguard::engine::upload::MAX_UPLOAD_BYTES + 1];
    for (what, bytes, status, code) in [
        (
            "random bytes",
            b"not wasm at all".to_vec(),
            StatusCode::BAD_REQUEST,
            "not_a_component",
        ),
        (
            "a core module",
            b"\0asm\x01\0\0\0".to_vec(),
            StatusCode::BAD_REQUEST,
            "not_a_component",
        ),
        (
            "oversized",
            oversized,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "forbidden import",
            plugin("forbidden_import"),
            StatusCode::BAD_REQUEST,
            "forbidden_imports",
        ),
        (
            "dry run traps",
            plugin("trap_on_evaluate"),
            StatusCode::BAD_REQUEST,
            "dry_run_failed",
        ),
    ] {
        let r = upload(bytes).await;
        assert_eq!(r.status, status, "{what}: {}", r.json);
        assert_eq!(r.json["code"], code, "{what}: {}", r.json);
        assert!(!r.json["error"].as_str().unwrap().is_empty(), "{what}");
    }
    assert_eq!(
        f.app.store.rule_versions().await.unwrap().len(),
        versions_before,
        "nothing refused was stored"
    );

    // The stream runs through every step: readings before, between and after the changes.
    let mut next = 0usize;
    let mut feed = |n: usize| {
        let lines: Vec<String> = (next..next + n)
            .map(|i| {
                glucose_json(
                    &format!("l-{i}"),
                    1,
                    T0 + i as i64 * 5 * MIN,
                    100.0 + (i % 20) as f64,
                )
            })
            .collect();
        next += n;
        lines
    };
    send_all(&f.app, feed(20)).await;
    let r = upload(plugin("default_rule_next")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["rule"]["version"], "1.1.0");
    assert!(
        r.json["dry_run"]["alerts"].as_u64().unwrap() > 0,
        "{}",
        r.json
    );
    send_all(&f.app, feed(20)).await;
    // Backtest 1.1.0 against the active 1.0.0 over the 40 readings stored so far, checked
    // against the two versions' logic computed here: above the reading threshold →
    // `high-reading`, else a 10-minute mean above 105 → `high-average`.
    let readings: Vec<(i64, f64)> = (0..40)
        .map(|i: i64| (T0 + i * 5 * MIN, 100.0 + (i % 20) as f64))
        .collect();
    let expect = |high: f64| -> std::collections::BTreeSet<(i64, &'static str)> {
        readings
            .iter()
            .filter_map(|&(t, v)| {
                let window: Vec<f64> = readings
                    .iter()
                    .filter(|(u, _)| *u > t - 10 * MIN && *u <= t)
                    .map(|(_, w)| *w)
                    .collect();
                let mean = window.iter().sum::<f64>() / window.len() as f64;
                if v > high {
                    Some((t, "high-reading"))
                } else if mean > 105.0 {
                    Some((t, "high-average"))
                } else {
                    None
                }
            })
            .collect()
    };
    let (base, cand) = (expect(115.0), expect(110.0));
    let added = cand.difference(&base).count() as u64;
    let removed = base.difference(&cand).count() as u64;
    let unchanged = cand.intersection(&base).count() as u64;
    assert!(added > 0, "the fixture must show a difference");
    let body = serde_json::json!({
        "version": "1.1.0", "from_ms": T0, "to_ms": T0 + 40 * 5 * MIN, "examples": 3,
    })
    .to_string();
    let diff = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/rules/default-glucose/backtest",
        &body,
    )
    .await;
    assert_eq!(diff.status, StatusCode::OK, "{}", diff.json);
    let d = &diff.json;
    assert_eq!(d["base"]["version"], "1.0.0");
    assert_eq!(d["readings_evaluated"], 40);
    assert_eq!(
        (
            d["added"].as_u64().unwrap(),
            d["removed"].as_u64().unwrap(),
            d["unchanged"].as_u64().unwrap()
        ),
        (added, removed, unchanged),
        "{d}"
    );
    assert_eq!(d["patients"][0]["patient_id"], 1);
    assert_eq!(d["patients"][0]["added"].as_u64().unwrap(), added);
    assert!(d["patients"][0]["added_examples"].as_array().unwrap().len() <= 3);
    assert_eq!(
        as_token(
            &f.router,
            &f.clinician,
            Method::POST,
            "/api/rules/default-glucose/backtest",
            &body
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // In shadow: 1.1.0 sees the stream beside 1.0.0; what it would raise is recorded and
    // notified to no one.
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/rules/default-glucose/shadow",
        r#"{"version": "1.1.0"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let mut live = f.app.live.subscribe();
    let lines = feed(20);
    let values: Vec<f64> = (20..40).map(|i| 100.0 + (i % 20) as f64).collect();
    send_all(&f.app, lines).await;
    let mut notified = Vec::new();
    while let Ok(a) = live.try_recv() {
        notified.push(a);
    }
    assert!(
        notified.iter().all(|a| a.rule.version == "1.0.0"),
        "a shadow alert was notified: {notified:?}"
    );
    let shadow = as_token(
        &f.router,
        a,
        Method::GET,
        "/api/rules/default-glucose/versions/1.1.0/shadow-alerts?limit=1000",
        "",
    )
    .await;
    assert_eq!(shadow.status, StatusCode::OK, "{}", shadow.json);
    // 1.1.0 alerts on readings above 110 (or a 10-minute average above 105): at least the
    // readings above 110 of this stretch, none of them in the live alerts.
    let above_110 = values.iter().filter(|v| **v > 110.0).count();
    let shadow_n = shadow.json.as_array().unwrap().len();
    assert!(
        shadow_n >= above_110 && above_110 > 0,
        "{shadow_n} shadow alerts, {above_110} readings above 110"
    );
    assert!(
        f.app
            .store
            .alerts(1000)
            .await
            .unwrap()
            .iter()
            .all(|(al, _)| al.rule.version == "1.0.0")
    );
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/rules/default-glucose/enable",
        r#"{"version": "1.1.0"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    send_all(&f.app, feed(20)).await;
    let running = |app: &App| {
        app.handle
            .stats()
            .rules
            .iter()
            .map(|r| r.rule.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(running(&f.app), ["default-glucose@1.1.0"]);
    // Parameters are checked against the declared bounds.
    let bad = as_token(
        &f.router,
        a,
        Method::PUT,
        "/api/rules/default-glucose/params",
        r#"{"high_mg_dl": 5000}"#,
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.json);
    let ok = as_token(
        &f.router,
        a,
        Method::PUT,
        "/api/rules/default-glucose/params",
        r#"{"high_mg_dl": 112}"#,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.json);
    send_all(&f.app, feed(20)).await;
    let back = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/rules/default-glucose/rollback",
        "",
    )
    .await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.json);
    assert_eq!(back.json["active_version"], "1.0.0");
    send_all(&f.app, feed(20)).await;
    assert_eq!(running(&f.app), ["default-glucose@1.0.0"]);
    // No reading evaluated twice or skipped: one rule ran on every reading exactly once.
    let stats = f.app.handle.stats();
    assert_eq!(stats.readings, 120);
    assert_eq!(
        stats.rule_readings,
        120 + 20,
        "each reading evaluated once by the live rule, and the 20 of the shadow stretch once more by the shadow"
    );
    // Every reading above 115 (and with 1.1.0's thresholds, above 110/112) alerted under
    // the version that ran when it arrived: each alert names the version.
    let alerts = f.app.store.alerts(1000).await.unwrap();
    let by_version = |v: &str| alerts.iter().filter(|(a, _)| a.rule.version == v).count();
    assert!(
        by_version("1.0.0") > 0 && by_version("1.1.0") > 0,
        "{alerts:?}"
    );

    // Clinicians read rules but change none.
    let c = as_token(&f.router, &f.clinician, Method::GET, "/api/rules", "").await;
    assert_eq!(c.status, StatusCode::OK);
    let c = as_token(
        &f.router,
        &f.clinician,
        Method::POST,
        "/api/rules/default-glucose/disable",
        "",
    )
    .await;
    assert_eq!(c.status, StatusCode::FORBIDDEN);

    // The audit log has each step, by the admin's token, with before and after.
    let log = f
        .app
        .store
        .audit_log(&AuditFilter {
            target: Some("rule:default-glucose".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let steps: Vec<(&str, &str)> = log
        .iter()
        .rev()
        .filter(|e| e.entry.actor.starts_with("token:"))
        .map(|e| (e.entry.action.as_str(), e.entry.target.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("rule.upload", "rule:default-glucose@1.1.0"),
            ("rule.backtest", "rule:default-glucose@1.1.0"),
            ("rule.shadow", "rule:default-glucose"),
            ("rule.enable", "rule:default-glucose"),
            ("rule.params", "rule:default-glucose"),
            ("rule.rollback", "rule:default-glucose"),
        ]
    );
    let rollback = log
        .iter()
        .find(|e| e.entry.action == "rule.rollback")
        .unwrap();
    assert_eq!(
        rollback.entry.before.as_ref().unwrap()["active_version"],
        "1.1.0"
    );
    assert_eq!(
        rollback.entry.after.as_ref().unwrap()["active_version"],
        "1.0.0"
    );
    let versions = as_token(
        &f.router,
        a,
        Method::GET,
        "/api/rules/default-glucose/versions",
        "",
    )
    .await;
    assert_eq!(
        versions.json[1]["uploaded_by"],
        log.iter()
            .find(|e| e.entry.action == "rule.upload")
            .unwrap()
            .entry
            .actor
    );
    support::stop(f.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_checks_references_and_answers_conflicts_and_missing_rows() {
    let f = fixture().await;
    let a = &f.admin;
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/patients",
        r#"{"patient_id": 1, "first_name": "X", "last_name": "Y"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    let r = as_token(
        &f.router,
        a,
        Method::PUT,
        "/api/patients/99",
        r#"{"patient_id": 99, "first_name": "X", "last_name": "Y"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A device naming a patient that is not in the store.
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/devices",
        r#"{"device_id": 5, "patient_id": 99}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.json);
    assert!(r.json["error"].as_str().unwrap().contains("patient 99"));
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/devices",
        r#"{"device_id": 5, "patient_id": 1, "device_type": "cgm"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    // Search and paging.
    let r = as_token(
        &f.router,
        a,
        Method::GET,
        "/api/patients?search=follow&limit=1",
        "",
    )
    .await;
    assert_eq!(r.json["total"], 1);
    assert_eq!(r.json["items"][0]["patient_id"], 1);
    // Soft delete: gone from lists and from subscriptions, still in the store for history.
    let r = as_token(&f.router, a, Method::DELETE, "/api/patients/1", "").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = as_token(&f.router, a, Method::GET, "/api/patients", "").await;
    assert_eq!(r.json["total"], 1);
    assert!(
        f.app
            .store
            .patient(1)
            .await
            .unwrap()
            .unwrap()
            .deleted_at_ms
            .is_some()
    );
    assert_eq!(
        f.app.store.followed_patients(10).await.unwrap(),
        Vec::<u64>::new()
    );
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/patients",
        r#"{"patient_id": 1, "first_name": "X", "last_name": "Y"}"#,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "ids are not reused: {}",
        r.json
    );
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/subscriptions",
        r#"{"subscriber_id": 10, "patient_id": 1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.json);
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/subscriptions",
        r#"{"subscriber_id": 10, "patient_id": 2}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/subscriptions",
        r#"{"subscriber_id": 10, "patient_id": 2}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Tokens: a revoked device token no longer ingests.
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        "/api/tokens",
        r#"{"name": "meter 7", "role": "device"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let token = r.json["token"].as_str().unwrap().to_owned();
    let id = r.json["record"]["token_id"].as_str().unwrap().to_owned();
    assert!(
        r.json["record"].get("secret_hash").is_none(),
        "hashes are never served"
    );
    let ingest = |t: String| {
        let router = f.router.clone();
        async move {
            as_token(
                &router,
                &t,
                Method::POST,
                "/api/ingest",
                &glucose_json("tk-1", 2, T0, 100.0),
            )
            .await
        }
    };
    assert_eq!(ingest(token.clone()).await.status, StatusCode::OK);
    assert_eq!(
        as_token(
            &f.router,
            a,
            Method::DELETE,
            &format!("/api/tokens/{id}"),
            ""
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(ingest(token).await.status, StatusCode::UNAUTHORIZED);
    support::stop(f.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_streams_only_the_followed_patients_alerts() {
    let f = fixture().await;
    let router = router(
        state(&f.app).with_live(f.app.live.clone()),
        f.app.handle.embedded_source("test"),
    );
    let bearer = support::bearer(&f.clinician);
    let resp = router
        .clone()
        .oneshot(
            Request::builder()
                .uri("/api/alerts/live")
                .header("authorization", &bearer)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    // The other patient's alert first, then the followed one's.
    send_all(&f.app, [glucose_json("sse-2", 2, T0, 200.0)]).await;
    send_all(&f.app, [glucose_json("sse-1", 1, T0 + MIN, 210.0)]).await;
    use futures_util::StreamExt as _;
    let mut text = String::new();
    while !text.contains("event: alert") || !text.contains("\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let alert: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        alert["patient_id"], 1,
        "the first event is the followed patient's: {text}"
    );
    assert!(!text.contains("\"patient_id\":2"), "{text}");
    support::stop(f.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_through_the_pipeline_and_nothing_is_lost() {
    let f = fixture().await;
    let a = &f.admin;
    // A conflict (same producer id, other content) and a payload that never parses.
    send_all(&f.app, [glucose_json("dl-1", 1, T0, 100.0)]).await;
    send_all(
        &f.app,
        [glucose_json("dl-1", 1, T0, 300.0), "{broken".to_owned()],
    )
    .await;
    let letters = as_token(&f.router, a, Method::GET, "/api/dead-letters", "").await;
    let letters = letters.json.as_array().unwrap().clone();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let fp = |needle: &str| {
        letters
            .iter()
            .find(|l| l["payload"].as_str().unwrap().contains(needle))
            .unwrap()["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let broken = fp("{broken");
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        &format!("/api/dead-letters/{broken}/replay"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
    assert!(
        f.app.store.dead_letter(&broken).await.unwrap().is_some(),
        "kept"
    );
    // The conflict still conflicts: replayed, it is a dead letter again under origin
    // `replay` with the reason, and the original is gone; nothing is lost either way.
    let conflict = fp("300");
    let r = as_token(
        &f.router,
        a,
        Method::POST,
        &format!("/api/dead-letters/{conflict}/replay"),
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(f.app.store.dead_letter(&conflict).await.unwrap().is_none());
    let now = f.app.store.dead_letters(10).await.unwrap();
    assert!(
        now.iter()
            .any(|d| d.origin == "replay" && d.payload.contains("300")),
        "{now:?}"
    );
    let log = f
        .app
        .store
        .audit_log(&AuditFilter {
            action: Some("dead_letter.".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    support::stop(f.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_exactly_the_routes_and_who_may_call_them() {
    let f = fixture().await;
    let r = call(&f.router, Method::GET, "/api/openapi.json", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK, "readable without logging in");
    let doc = r.json;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut described = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            described.insert((method.to_uppercase(), path.clone()));
            let roles: Vec<&str> = op["x-roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let want: Vec<&str> = expected()[&(method.to_uppercase().as_str(), path.as_str())]
                .iter()
                .map(|r| r.as_str())
                .collect();
            let (mut a, mut b) = (roles.clone(), want.clone());
            a.sort();
            b.sort();
            assert_eq!(a, b, "{method} {path}");
            // Every path parameter is declared.
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            for seg in path
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            {
                assert!(declared.contains(&seg), "{method} {path} lacks {seg}");
            }
        }
    }
    // Pages and their assets are the web admin, not the API.
    let routed: std::collections::BTreeSet<(String, String)> = expected()
        .keys()
        .filter(|(_, p)| glucoguard::web::is_api(p))
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(described, routed, "the document and the routes differ");
    support::stop(f.app).await;
}

/// How many stored alerts each of patients 1 and 2 has, as the admin sees them.
async fn alerts_per_patient(f: &Fixture) -> (usize, usize) {
    let all = as_token(
        &f.router,
        &f.admin,
        Method::GET,
        "/api/alerts?limit=1000",
        "",
    )
    .await;
    let of = |p: u64| {
        all.json
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["patient_id"] == p)
            .count()
    };
    (of(1), of(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_rule_evaluates_only_its_patients_and_follows_directory_changes() {
    let f = fixture().await;
    let a = &f.admin;
    let scope = |body: &'static str| {
        let router = f.router.clone();
        let token = a.clone();
        async move {
            as_token(
                &router,
                &token,
                Method::PUT,
                "/api/rules/default-glucose/scope",
                body,
            )
            .await
        }
    };
    // Scopes that cannot be what was meant are refused, and change nothing.
    for (body, why) in [
        (r#"{"kind":"profiles","profiles":[]}"#, "no profile"),
        (
            r#"{"kind":"profiles","profiles":["  "]}"#,
            "a blank profile",
        ),
        (r#"{"kind":"patients","patients":[]}"#, "no patient"),
        (
            r#"{"kind":"patients","patients":[1,99]}"#,
            "a patient not in the directory",
        ),
        (r#"{"kind":"everyone"}"#, "an unknown kind"),
        (r#"{"kind":"all","patients":[1]}"#, "an unknown field"),
    ] {
        let r = scope(body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}: {}", r.json);
    }
    let unknown = as_token(
        &f.router,
        a,
        Method::PUT,
        "/api/rules/no-such-rule/scope",
        r#"{"kind":"all"}"#,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.json);

    // Patient 1 is diabetic, patient 2 has no profile; the rule watches diabetics only.
    let r = as_token(
        &f.router,
        a,
        Method::PUT,
        "/api/patients/1",
        r#"{"patient_id":1,"first_name":"Ada","last_name":"Followed","profile":"diabetic"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = scope(r#"{"kind":"profiles","profiles":["diabetic"]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["scope"]["kind"], "profiles", "{}", r.json);

    // Every reading is high: both patients would alert under an unscoped rule.
    let mut next = 0i64;
    let mut high = |patients: &[u64]| {
        let lines: Vec<String> = patients
            .iter()
            .map(|&p| {
                next += 1;
                glucose_json(&format!("s-{next}"), p, T0 + next * 5 * MIN, 150.0)
            })
            .collect();
        lines
    };
    send_all(&f.app, high(&[1, 2])).await;
    assert_eq!(
        alerts_per_patient(&f).await,
        (1, 0),
        "only the diabetic alerts"
    );

    // Patient 2 is given the profile: the rule covers them from the next reading, with no
    // rule change.
    let r = as_token(
        &f.router,
        a,
        Method::PUT,
        "/api/patients/2",
        r#"{"patient_id":2,"first_name":"Bo","last_name":"Other","profile":"diabetic"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    send_all(&f.app, high(&[1, 2])).await;
    assert_eq!(
        alerts_per_patient(&f).await,
        (2, 1),
        "the new diabetic is covered"
    );

    // Listed patients: only patient 2.
    let r = scope(r#"{"kind":"patients","patients":[2]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    send_all(&f.app, high(&[1, 2])).await;
    assert_eq!(alerts_per_patient(&f).await, (2, 2));

    // A clinician reading the rules sees only the scope's patients they follow.
    let r = scope(r#"{"kind":"patients","patients":[1,2]}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let seen = as_token(&f.router, &f.clinician, Method::GET, "/api/rules", "").await;
    let rule = seen
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "default-glucose")
        .unwrap();
    assert_eq!(
        rule["state"]["scope"],
        serde_json::json!({"kind": "patients", "patients": [1]}),
        "patient 2 is not the clinician's to know of"
    );
    let seen = as_token(&f.router, a, Method::GET, "/api/rules", "").await;
    let rule = seen
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "default-glucose")
        .unwrap();
    assert_eq!(
        rule["state"]["scope"]["patients"],
        serde_json::json!([1, 2])
    );

    // Back to every patient; the scope survived in the store, and each change was audited
    // with what it replaced.
    let r = scope(r#"{"kind":"all"}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    send_all(&f.app, high(&[1, 2])).await;
    assert_eq!(alerts_per_patient(&f).await, (3, 3));
    let stored = f.app.store.rule_states().await.unwrap();
    assert_eq!(
        stored
            .iter()
            .find(|s| s.name == "default-glucose")
            .unwrap()
            .scope,
        glucoguard::store::RuleScope::All {}
    );
    let log = f
        .app
        .store
        .audit_log(&AuditFilter {
            target: Some("rule:default-glucose".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let scopes: Vec<&serde_json::Value> = log
        .iter()
        .rev()
        .filter(|e| e.entry.action == "rule.scope")
        .map(|e| &e.entry.after.as_ref().unwrap()["scope"])
        .collect();
    assert_eq!(
        scopes,
        [
            &serde_json::json!({"kind": "profiles", "profiles": ["diabetic"]}),
            &serde_json::json!({"kind": "patients", "patients": [2]}),
            &serde_json::json!({"kind": "patients", "patients": [1, 2]}),
            &serde_json::json!({"kind": "all"}),
        ]
    );
    support::stop(f.app).await;
}
