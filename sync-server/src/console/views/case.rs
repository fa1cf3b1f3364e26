//! One case's page: its fields, conflicts side by side, photos, timeline and the actions the
//! person's role allows.

use super::*;

#[derive(Debug, Clone)]
pub struct OptionView {
    pub index: usize,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct ConflictView {
    pub field: String,
    pub label: String,
    pub options: Vec<OptionView>,
}

#[derive(Debug, Clone)]
pub struct CandidateView {
    pub event: String,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct PhotoItem {
    pub sha256: String,
    pub thumb: Option<String>,
    pub on_server: bool,
    /// "read", "partly_read", "unreadable", "absent" or "not_recorded".
    pub metadata: &'static str,
    /// What the photo's metadata says, or says it lacks, one line each.
    pub facts: Vec<String>,
    /// Taken more than a kilometre from where the case was reported.
    pub far: bool,
}

/// A photo on the case page: its capture time, or that it has none; how much of its metadata
/// could be read; and how far its own position is from the report's.
pub(super) fn photo_item(lang: Lang, p: &crate::store::console::PhotoView) -> PhotoItem {
    use gridwork_model::evidence::{PhotoMetadata as M, EXIF_GPS_FAR_M};
    let mut facts = vec![];
    match &p.capture_time {
        Some(t) => facts.push(format!("{} {t}", lang.t("photo_taken"))),
        None if p.metadata.is_some() => facts.push(lang.t("photo_no_time").to_owned()),
        None => {}
    }
    let metadata = match p.metadata {
        Some(M::Read) => "read",
        Some(M::PartlyRead) => "partly_read",
        Some(M::Unreadable) => "unreadable",
        Some(M::Absent) => "absent",
        None => "not_recorded",
    };
    if matches!(p.metadata, Some(M::PartlyRead | M::Unreadable | M::Absent)) {
        facts.push(lang.t(&format!("photo_meta_{metadata}")).to_owned());
    }
    let far = p.gps_off_m.is_some_and(|m| m > EXIF_GPS_FAR_M);
    if let Some(m) = p.gps_off_m.filter(|_| far) {
        facts.push(format!("{} {:.1} km", lang.t("photo_far"), f64::from(m) / 1000.0));
    }
    PhotoItem { sha256: p.sha256.clone(), thumb: p.thumb_sha256.clone(), on_server: p.on_server, metadata, facts, far }
}

#[derive(Debug, Clone)]
pub struct TimelineRow {
    pub kind: String,
    pub when: String,
    pub who: String,
    pub device: String,
    pub event: String,
    pub verdict: String,
    /// Made on a device that signs: its signature was checked when the server received it.
    pub verified: bool,
    /// "" or how far the wall clock that stamped it was from the true time ("−2 h 03 min").
    pub clock_off: String,
    /// Taken by the server's escalation rules (`rules::escalation::SYSTEM_USER`).
    pub automatic: bool,
}

#[derive(Debug, Clone)]
pub struct ActionView {
    pub kind: String,
    pub label: String,
}

#[derive(Debug, Template)]
#[template(path = "console/case.html")]
pub struct CasePage {
    pub chrome: Chrome,
    pub id: String,
    pub code: String,
    pub title: String,
    pub status: String,
    pub status_label: String,
    pub overdue: bool,
    pub flags: Vec<String>,
    pub fields: Vec<(String, String)>,
    pub conflicts: Vec<ConflictView>,
    pub contest: Vec<CandidateView>,
    pub photos: Vec<PhotoItem>,
    pub timeline: Vec<TimelineRow>,
    pub map_svg: String,
    pub actions: Vec<ActionView>,
    pub departments: Vec<Choice>,
    pub default_hours: i64,
}

pub(super) fn describe(kind: &EventKind, lang: Lang, catalog: &Catalog, calendar: &DistrictCalendar) -> String {
    let name = lang.t(&format!("ev_{}", kind.name())).to_owned();
    let detail = match kind {
        EventKind::Dispatch { departments, deadline_ms } => format!(
            "{} · {} {}",
            departments.iter().map(|d| department_name(catalog, &d.0)).collect::<Vec<_>>().join("、"),
            lang.t("deadline"),
            calendar.minute_of(*deadline_ms)
        ),
        EventKind::Reject { reason, note, .. } => {
            let r = match reason {
                RejectReason::Duplicate => lang.t("rr_duplicate"),
                RejectReason::OutOfScope => lang.t("rr_out_of_scope"),
            };
            if note.is_empty() {
                r.to_owned()
            } else {
                format!("{r} · {note}")
            }
        }
        EventKind::Escalate { to, note } => {
            let l = match to {
                Level::Community => lang.t("lv_community"),
                Level::Street => lang.t("lv_street"),
                Level::District => lang.t("lv_district"),
            };
            format!("{l} {note}")
        }
        EventKind::FollowUp { satisfaction, note } => format!("{} {satisfaction}/5 {note}", lang.t("satisfaction")),
        EventKind::HandlerReport { department, note, .. } => {
            format!("{} {note}", department_name(catalog, &department.0))
        }
        EventKind::Start { department } => department_name(catalog, &department.0),
        EventKind::Accept { note } | EventKind::Close { note } | EventKind::Urge { note } => note.clone(),
        EventKind::Note { text } => text.clone(),
        EventKind::Return { reason } => reason.clone(),
        EventKind::Assign { user } | EventKind::Unassign { user } => user.0.clone(),
        EventKind::Settle { chosen } => chosen.to_string(),
        EventKind::Report | EventKind::Unknown => String::new(),
    };
    if detail.trim().is_empty() {
        name
    } else {
        format!("{name}: {}", detail.trim())
    }
}

pub(super) fn role_label(role: Role, lang: Lang) -> &'static str {
    match (role, lang) {
        (Role::Worker, Lang::Zh) => "网格员",
        (Role::Supervisor, Lang::Zh) => "督导",
        (Role::DepartmentHandler, Lang::Zh) => "部门处置人员",
        (Role::Administrator, Lang::Zh) => "管理员",
        (Role::Worker, Lang::En) => "worker",
        (Role::Supervisor, Lang::En) => "supervisor",
        (Role::DepartmentHandler, Lang::En) => "department handler",
        (Role::Administrator, Lang::En) => "administrator",
    }
}

/// The actions this person may take on the case as the server sees it: the lifecycle's role
/// table decides, as it will again when the action is posted.
pub(super) fn allowed_actions(
    user: &ConsoleUser,
    view: &CaseView,
    lang: Lang,
    catalog: &Catalog,
    now_ms: i64,
) -> Vec<ActionView> {
    let actor = user.actor();
    let dept = DepartmentId::from(user.department.clone().unwrap_or_default().as_str());
    let candidates = [
        EventKind::Accept { note: String::new() },
        EventKind::Reject { reason: RejectReason::Duplicate, duplicate_of: None, note: String::new() },
        // A dispatch the check can judge: a real department, a deadline ahead.
        EventKind::Dispatch {
            departments: catalog.departments.iter().take(1).map(|d| d.id.clone()).collect(),
            deadline_ms: now_ms + 3_600_000,
        },
        EventKind::Start { department: dept.clone() },
        EventKind::HandlerReport { department: dept, note: String::new(), evidence: vec![] },
        EventKind::Urge { note: String::new() },
        EventKind::Escalate { to: Level::Street, note: String::new() },
        EventKind::Return { reason: "-".into() },
        EventKind::Close { note: String::new() },
        EventKind::Note { text: "-".into() },
    ];
    candidates
        .iter()
        .filter(|k| lifecycle::check(k, &actor, &view.case.timeline.state).is_ok())
        .map(|k| ActionView { kind: k.name().to_owned(), label: lang.t(&format!("ev_{}", k.name())).to_owned() })
        .collect()
}

pub fn case_page(chrome: Chrome, catalog: &Catalog, user: &ConsoleUser, view: &CaseView, now_ms: i64) -> CasePage {
    let lang = chrome.lang;
    let calendar = DistrictCalendar::default();
    let case = &view.case;
    let state = &case.timeline.state;
    let loc = &case.location.value;
    let mut fields = vec![
        (lang.t("description").to_owned(), case.description.clone()),
        (lang.t("category").to_owned(), category_name(catalog, lang, &case.category.value.0)),
        (lang.t("grid").to_owned(), grid_name(catalog, &case.grid.value.0)),
        (
            lang.t("location").to_owned(),
            format!(
                "{:.6}, {:.6} · {} ±{:.0} m{}",
                loc.lat,
                loc.lon,
                lang.t("accuracy"),
                loc.accuracy_m,
                if loc.mock { format!(" · {}", lang.t("mock_location")) } else { String::new() }
            ),
        ),
        (lang.t("reporter").to_owned(), case.reporter.0.clone()),
        (lang.t("reported").to_owned(), calendar.minute_of(case.created_ms)),
        (lang.t("received").to_owned(), minute(&calendar, view.received_ms)),
    ];
    if !state.dispatched.is_empty() {
        fields.push((
            lang.t("departments").to_owned(),
            state.dispatched.keys().map(|d| department_name(catalog, &d.0)).collect::<Vec<_>>().join("、"),
        ));
    }
    if let Some(d) = state.deadline_ms {
        fields.push((lang.t("deadline").to_owned(), calendar.minute_of(d)));
    }
    if let Some(n) = &case.official_number {
        fields.push((lang.t("official_number").to_owned(), n.clone()));
    }
    let mut conflicts = vec![];
    let mut push_conflict = |field: &str, label: &str, options: Vec<String>| {
        if !options.is_empty() {
            conflicts.push(ConflictView {
                field: field.to_owned(),
                label: label.to_owned(),
                options: options.into_iter().enumerate().map(|(index, text)| OptionView { index, text }).collect(),
            });
        }
    };
    push_conflict(keys::TITLE, lang.t("title"), case.title.conflicts.clone());
    push_conflict(
        keys::CATEGORY,
        lang.t("category"),
        case.category.conflicts.iter().map(|c| category_name(catalog, lang, &c.0)).collect(),
    );
    push_conflict(keys::GRID, lang.t("grid"), case.grid.conflicts.iter().map(|g| grid_name(catalog, &g.0)).collect());
    push_conflict(
        keys::LOCATION,
        lang.t("location"),
        case.location.conflicts.iter().map(|l| format!("{:.6}, {:.6} ±{:.0} m", l.lat, l.lon, l.accuracy_m)).collect(),
    );
    let contest = match &state.status {
        StatusView::Contested { candidates } if user.role == Role::Supervisor => candidates
            .iter()
            .map(|c| {
                let who = case
                    .timeline
                    .entries
                    .iter()
                    .find(|e| e.event.id == c.event)
                    .map(|e| format!("{} · {}", e.event.actor.user, describe(&e.event.kind, lang, catalog, &calendar)))
                    .unwrap_or_default();
                CandidateView {
                    event: c.event.to_string(),
                    label: format!("{} — {}", status_label(lang, c.status.as_str()), who),
                }
            })
            .collect(),
        _ => vec![],
    };
    let timeline = case
        .timeline
        .entries
        .iter()
        .map(|e| TimelineRow {
            kind: e.event.kind.name().to_owned(),
            when: calendar.minute_of(e.event.clock.estimated_ms()),
            who: format!("{} ({})", e.event.actor.user, role_label(e.event.actor.role, lang)),
            device: e.event.actor.device.0.clone(),
            automatic: e.event.actor.user.0 == crate::rules::escalation::SYSTEM_USER,
            verified: view.signing_devices.contains(&e.event.actor.device.0),
            clock_off: view.clock_off.get(&e.event.id.to_string()).map(|ms| signed_duration(*ms)).unwrap_or_default(),
            event: describe(&e.event.kind, lang, catalog, &calendar),
            verdict: match &e.verdict {
                Verdict::Applied => lang.t("applied").to_owned(),
                Verdict::Invalid { reason } => format!("{}: {reason}", lang.t("invalid")),
                other => format!("{other:?}"),
            },
        })
        .collect();
    let grid = catalog.grids.iter().find(|g| g.id == case.grid.value);
    let default_hours = catalog
        .categories
        .iter()
        .find(|c| c.id == case.category.value)
        .map(|c| i64::from(c.default_deadline_hours))
        .unwrap_or(72);
    CasePage {
        id: case.id.to_string(),
        code: case.code.clone(),
        title: case.title.value.clone(),
        status: state.status.label().to_owned(),
        status_label: status_label(lang, state.status.label()),
        overdue: state.is_overdue(now_ms),
        flags: view.flags.iter().map(|f| flag_label(lang, f)).collect(),
        fields,
        conflicts,
        contest,
        photos: view.photos.iter().map(|p| photo_item(lang, p)).collect(),
        timeline,
        map_svg: map::case_map(grid.map(|g| &g.boundary), loc.lat, loc.lon, state.status.label()),
        actions: allowed_actions(user, view, lang, catalog, now_ms),
        departments: catalog
            .departments
            .iter()
            .map(|d| Choice { value: d.id.0.clone(), label: d.name.clone(), selected: false })
            .collect(),
        default_hours,
        chrome,
    }
}
