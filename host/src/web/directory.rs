//! The directory: patients (staff, a clinician only theirs), devices and subscribers
//! (admins), each with search and paging, and forms that create rows through the JSON API.

use super::{Layout, Page, Paging, Route, render};
use crate::admin::AdminState;
use crate::admin::api;
use crate::admin::auth::{Access, Principal};
use crate::store::directory::ListQuery;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::routing::get;
use axum::{Extension, Json};

pub(super) fn routes(staff: Access, admin: Access) -> Vec<Route> {
    vec![
        (Method::GET, "/web/patients", staff, get(patients)),
        (Method::GET, "/web/devices", admin, get(devices)),
        (Method::GET, "/web/subscribers", admin, get(subscribers)),
    ]
}

/// A table cell: text, and a link when it leads somewhere.
pub(super) struct Cell {
    pub text: String,
    pub href: String,
}

impl Cell {
    pub fn text(t: impl ToString) -> Cell {
        Cell {
            text: t.to_string(),
            href: String::new(),
        }
    }
    pub fn link(t: impl ToString, href: String) -> Cell {
        Cell {
            text: t.to_string(),
            href,
        }
    }
    pub fn opt<T: ToString>(t: &Option<T>) -> Cell {
        Cell::text(t.as_ref().map(|v| v.to_string()).unwrap_or_default())
    }
}

/// A field of a create form (`data-api` JSON form): its name, label and input type.
pub(super) struct FormField {
    pub name: &'static str,
    pub label: &'static str,
    /// `text`, `number` or `email`.
    pub input: &'static str,
    pub required: bool,
}

/// A create form posting JSON to the API.
pub(super) struct CreateForm {
    pub title: &'static str,
    pub url: &'static str,
    pub fields: Vec<FormField>,
}

/// One list page: a search box, a table, paging, and for admins a create form.
#[derive(Template)]
#[template(path = "table.html")]
pub(super) struct TablePage {
    pub layout: Layout,
    pub intro: &'static str,
    pub table_id: &'static str,
    pub base: &'static str,
    pub search: bool,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    pub paging: Option<Paging>,
    pub form: Option<CreateForm>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Search {
    q: String,
    offset: u32,
}

impl Search {
    fn list_query(&self) -> ListQuery {
        ListQuery {
            search: (!self.q.trim().is_empty()).then(|| self.q.trim().to_owned()),
            offset: Some(self.offset),
            limit: Some(50),
            include_deleted: false,
        }
    }
}

fn paging<T>(page: &crate::store::directory::Page<T>, q: &Search) -> Paging {
    Paging {
        offset: page.offset,
        limit: page.limit,
        total: page.total,
        query: q.q.trim().to_owned(),
    }
}

const fn field(
    name: &'static str,
    label: &'static str,
    input: &'static str,
    required: bool,
) -> FormField {
    FormField {
        name,
        label,
        input,
        required,
    }
}

async fn patients(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<Search>,
) -> Page {
    let layout = Layout::new(&p, "Patients", "patients");
    let admin = layout.is_admin;
    let Json(page) = api::patients(State(s), Extension(p), Query(q.list_query())).await?;
    let rows = page
        .items
        .iter()
        .map(|r| {
            let id = r.patient.patient_id;
            vec![
                Cell::link(id, format!("/web/patients/{id}")),
                Cell::link(
                    format!("{} {}", r.patient.first_name, r.patient.last_name),
                    format!("/web/patients/{id}"),
                ),
                Cell::opt(&r.patient.profile),
                Cell::opt(&r.patient.diabetes_type),
                Cell::link("alerts", format!("/web/alerts?patient_id={id}")),
            ]
        })
        .collect();
    Ok(render(TablePage {
        intro: "Everyone monitored here. Open a patient for their glucose dashboard.",
        table_id: "patients-table",
        base: "/web/patients",
        search: true,
        columns: vec!["Id", "Name", "Profile", "Diabetes", "Alerts"],
        rows,
        paging: Some(paging(&page, &q)),
        form: admin.then(|| CreateForm {
            title: "Add a patient",
            url: "/api/patients",
            fields: vec![
                field("patient_id", "Patient id", "number", true),
                field("first_name", "First name", "text", true),
                field("last_name", "Last name", "text", true),
                field("profile", "Profile", "text", false),
                field("diabetes_type", "Diabetes type", "text", false),
            ],
        }),
        layout,
    }))
}

async fn devices(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<Search>,
) -> Page {
    let layout = Layout::new(&p, "Devices", "devices");
    let Json(page) = api::devices(State(s), Extension(p), Query(q.list_query())).await?;
    let rows = page
        .items
        .iter()
        .map(|d| {
            vec![
                Cell::text(d.device_id),
                Cell::link(d.patient_id, format!("/web/patients/{}", d.patient_id)),
                Cell::opt(&d.device_type),
                Cell::opt(&d.model),
                Cell::opt(&d.serial_number),
                Cell::opt(&d.firmware_version),
            ]
        })
        .collect();
    Ok(render(TablePage {
        intro: "Meters and CGMs, each registered to a patient.",
        table_id: "devices-table",
        base: "/web/devices",
        search: true,
        columns: vec!["Id", "Patient", "Type", "Model", "Serial", "Firmware"],
        rows,
        paging: Some(paging(&page, &q)),
        form: Some(CreateForm {
            title: "Register a device",
            url: "/api/devices",
            fields: vec![
                field("device_id", "Device id", "number", true),
                field("patient_id", "Patient id", "number", true),
                field("device_type", "Type (cgm or meter)", "text", false),
                field("model", "Model", "text", false),
                field("serial_number", "Serial number", "text", false),
            ],
        }),
        layout,
    }))
}

async fn subscribers(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<Search>,
) -> Page {
    let layout = Layout::new(&p, "Subscribers", "subscribers");
    let Json(page) = api::subscribers(State(s), Query(q.list_query())).await?;
    let rows = page
        .items
        .iter()
        .map(|r| {
            let sub = &r.subscriber;
            vec![
                Cell::text(sub.subscriber_id),
                Cell::text(&sub.name),
                Cell::text(&sub.role),
                Cell::text(if sub.telegram_chat_id.is_some() {
                    "linked"
                } else {
                    ""
                }),
                Cell::opt(&sub.email),
            ]
        })
        .collect();
    Ok(render(TablePage {
        intro: "Who is told: patients, caregivers, doctors and applications. Subscriptions are on each patient's page.",
        table_id: "subscribers-table",
        base: "/web/subscribers",
        search: true,
        columns: vec!["Id", "Name", "Role", "Telegram", "Email"],
        rows,
        paging: Some(paging(&page, &q)),
        form: Some(CreateForm {
            title: "Add a subscriber",
            url: "/api/subscribers",
            fields: vec![
                field("subscriber_id", "Subscriber id", "number", true),
                field("name", "Name", "text", true),
                field(
                    "role",
                    "Role (patient, caregiver, doctor, app)",
                    "text",
                    true,
                ),
                field("email", "Email", "email", false),
            ],
        }),
        layout,
    }))
}
