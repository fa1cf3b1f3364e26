//! The administration page's view model, the escalation form and the enrolment QR code.

use super::*;

#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub id: String,
    pub code: String,
    pub user: String,
    pub status: String,
    pub unsynced: String,
    /// Oldest unsynced work over a day old.
    pub stale: bool,
    pub outbox: String,
    pub photos: String,
    pub last_seen: String,
    pub can_retire: bool,
    pub can_revoke: bool,
    /// Not yet ordered wiped, and reachable (a revoked phone never hears the order).
    pub can_wipe: bool,
    /// (links, holes, forks) of its signed chain; None for an app older than signing.
    pub chain: Option<(i64, i64, i64)>,
}

#[derive(Debug, Clone)]
pub struct PersonRow {
    pub id: String,
    pub role: String,
    pub department: String,
    pub scopes: String,
    pub has_password: bool,
}

#[derive(Debug, Clone)]
pub struct CategoryRow {
    pub value: String,
    pub label: String,
    pub hours: u32,
    pub retired: bool,
}

#[derive(Debug, Template)]
#[template(path = "console/admin.html")]
pub struct AdminPage {
    pub chrome: Chrome,
    pub devices: Vec<DeviceRow>,
    pub quarantine: Vec<crate::store::QuarantinedItem>,
    pub people: Vec<PersonRow>,
    pub categories: Vec<CategoryRow>,
    pub catalog_version: u64,
    pub escalation: EscalationView,
}

/// The escalation policy as the administration form shows it.
#[derive(Debug, Clone)]
pub struct EscalationView {
    /// ISO weekdays, space-separated ("1 2 3 4 5").
    pub weekdays: String,
    pub start: String,
    pub end: String,
    pub holidays: String,
    pub extra_workdays: String,
    pub default_rules: String,
    /// (category id, name, its own rules' text or "" for the default, "none" for no rules).
    pub categories: Vec<(String, String, String)>,
}

pub fn escalation_view(policy: &crate::rules::escalation::Policy, catalog: &Catalog, lang: Lang) -> EscalationView {
    use crate::rules::escalation::rules_text;
    let h = &policy.working_hours;
    EscalationView {
        weekdays: h.weekdays.iter().map(u8::to_string).collect::<Vec<_>>().join(" "),
        start: gridwork_model::time::hhmm(h.start_minute),
        end: gridwork_model::time::hhmm(h.end_minute),
        holidays: h.holidays.join(" "),
        extra_workdays: h.extra_workdays.join(" "),
        default_rules: rules_text(&policy.default_rules),
        categories: catalog
            .categories
            .iter()
            .filter(|c| !c.retired)
            .map(|c| {
                let own = match policy.by_category.get(&c.id.0) {
                    None => String::new(),
                    Some(r) if r.is_empty() => "none".to_owned(),
                    Some(r) => rules_text(r),
                };
                (c.id.0.clone(), category_name(catalog, lang, &c.id.0), own)
            })
            .collect(),
    }
}

/// "+1 h 05 min" / "−2 h 03 min" / "−12 min".
pub fn signed_duration(ms: i64) -> String {
    let sign = if ms < 0 { "−" } else { "+" };
    let minutes = ms.unsigned_abs() / 60_000;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{sign}{m} min"),
        (h, m) if h < 48 => format!("{sign}{h} h {m:02} min"),
        (h, _) => format!("{sign}{} d {} h", h / 24, h % 24),
    }
}

pub(super) fn age_text(ms: i64) -> String {
    let minutes = ms / 60_000;
    match minutes {
        m if m < 60 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h", m / 60),
        m => format!("{} d", m / (24 * 60)),
    }
}

pub fn admin_page(
    chrome: Chrome,
    catalog: &Catalog,
    devices: &[crate::store::DeviceInfo],
    quarantine: Vec<crate::store::QuarantinedItem>,
    people: &[crate::store::console::PersonView],
    policy: &crate::rules::escalation::Policy,
) -> AdminPage {
    let lang = chrome.lang;
    let calendar = DistrictCalendar::default();
    let state_u64 = |d: &crate::store::DeviceInfo, k: &str| {
        d.last_state.as_ref().and_then(|s| s.get(k)).and_then(|v| v.as_u64()).unwrap_or(0).to_string()
    };
    AdminPage {
        devices: devices
            .iter()
            .map(|d| DeviceRow {
                id: d.id.clone(),
                code: d.code.clone(),
                user: d.user.clone(),
                status: d.status.clone(),
                unsynced: d.unsynced_age_ms.map(age_text).unwrap_or_default(),
                stale: d.unsynced_age_ms.is_some_and(|a| a > 24 * 3_600_000),
                outbox: state_u64(d, "outbox_items"),
                photos: state_u64(d, "photos_pending"),
                last_seen: minute(&calendar, d.last_seen_ms),
                can_retire: d.status == "active",
                can_revoke: d.status != "revoked",
                can_wipe: matches!(d.status.as_str(), "active" | "retired" | "retired_drained"),
                chain: d.chain.as_ref().map(|c| (c.links, c.holes, c.forks)),
            })
            .collect(),
        quarantine,
        people: people
            .iter()
            .map(|p| PersonRow {
                id: p.id.clone(),
                role: role_label(p.role, lang).to_owned(),
                department: p.department.clone().unwrap_or_default(),
                scopes: p.scopes.join(" "),
                has_password: p.has_password,
            })
            .collect(),
        categories: catalog
            .categories
            .iter()
            .map(|c| CategoryRow {
                value: c.id.0.clone(),
                label: category_name(catalog, lang, &c.id.0),
                hours: c.default_deadline_hours,
                retired: c.retired,
            })
            .collect(),
        catalog_version: catalog.version,
        escalation: escalation_view(policy, catalog, lang),
        chrome,
    }
}

#[derive(Debug, Template)]
#[template(path = "console/enrolled.html")]
pub struct EnrolledPage {
    pub chrome: Chrome,
    pub user: String,
    pub device: String,
    pub code: String,
    pub uri: String,
    pub qr_svg: String,
}

/// The enrolment URI as an SVG QR code, for the phone's camera.
pub fn qr_svg(text: &str) -> Result<String, crate::error::ServerError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| crate::error::ServerError::Internal(format!("QR code: {e}")))?;
    Ok(code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(240, 240).build())
}
