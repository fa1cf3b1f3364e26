//! The queue page's view model and its CSV.

use super::*;

#[derive(Debug, Clone)]
pub struct StatusCount {
    pub status: String,
    pub label: String,
    pub count: i64,
    pub href: String,
    pub on: bool,
}

#[derive(Debug, Clone)]
pub struct RowView {
    pub id: String,
    pub code: String,
    pub title: String,
    pub status: String,
    pub status_label: String,
    pub overdue: bool,
    pub deadline: String,
    pub grid: String,
    pub category: String,
    pub departments: String,
    pub reported: String,
    pub flags: Vec<String>,
}

#[derive(Debug, Template)]
#[template(path = "console/queue.html")]
pub struct QueuePage {
    pub chrome: Chrome,
    pub filter: CaseFilter,
    pub total: i64,
    pub all_count: i64,
    pub status_href_all: String,
    pub counts: Vec<StatusCount>,
    pub areas: Vec<Choice>,
    pub categories: Vec<Choice>,
    pub departments: Vec<Choice>,
    pub rows: Vec<RowView>,
    pub page: u32,
    pub pages: u32,
    pub prev_href: Option<String>,
    pub next_href: Option<String>,
    pub csv_href: String,
    /// The filter as hidden fields of the "go to page" form.
    pub page_jump_fields: Vec<(&'static str, String)>,
    /// Supervisors and administrators triage several cases at once (each case is still checked
    /// against the role table on its own).
    pub can_triage: bool,
    /// Where the bulk form comes back to: this queue, as filtered.
    pub back: String,
    /// What the last bulk action did: (cases done, codes refused).
    pub bulk: Option<(u32, String)>,
    /// "Needs you today": (key, label, count, href).
    pub needs: Vec<(&'static str, String, i64, String)>,
    /// A search ran while the index had not seen this many changes (their cases may be missing).
    pub index_behind: i64,
}

/// What the queue page says above its rows besides the queue itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueNotes<'a> {
    /// What the last bulk action did: (cases done, codes refused).
    pub bulk: Option<(u32, &'a str)>,
    /// "Needs you today" (on the page a person lands on).
    pub needs: &'a [crate::store::console::NeedsYou],
    /// A search ran while the index had not seen this many changes.
    pub index_behind: i64,
}

pub fn queue_page(
    chrome: Chrome,
    catalog: &Catalog,
    user: &ConsoleUser,
    filter: CaseFilter,
    queue: CaseQueue,
    notes: QueueNotes<'_>,
) -> QueuePage {
    let QueueNotes { bulk, needs, index_behind } = notes;
    let lang = chrome.lang;
    let calendar = DistrictCalendar::default();
    let counts = queue
        .counts
        .iter()
        .map(|(s, n)| StatusCount {
            status: s.clone(),
            label: status_label(lang, s),
            count: *n,
            href: format!("/console/cases?{}", filter_query(&filter, s, 1)),
            on: filter.status == *s,
        })
        .collect();
    let rows = queue
        .rows
        .iter()
        .map(|r| RowView {
            id: r.id.clone(),
            code: r.code.clone(),
            title: r.title.clone(),
            status: r.status.clone(),
            status_label: status_label(lang, &r.status),
            overdue: r.overdue,
            deadline: minute(&calendar, r.deadline_ms),
            grid: grid_name(catalog, &r.grid),
            category: category_name(catalog, lang, &r.category),
            departments: r.departments.iter().map(|d| department_name(catalog, d)).collect::<Vec<_>>().join("、"),
            reported: minute(&calendar, r.reported_ms),
            flags: r.flags.iter().map(|f| flag_label(lang, f)).collect(),
        })
        .collect();
    let page = queue.page;
    QueuePage {
        all_count: queue.counts.iter().map(|(_, n)| n).sum(),
        status_href_all: format!("/console/cases?{}", filter_query(&filter, "", 1)),
        counts,
        areas: area_choices(catalog, user, &filter.area),
        categories: catalog
            .categories
            .iter()
            .map(|c| Choice {
                value: c.id.0.clone(),
                label: category_name(catalog, lang, &c.id.0),
                selected: c.id.0 == filter.category,
            })
            .collect(),
        departments: catalog
            .departments
            .iter()
            .map(|d| Choice { value: d.id.0.clone(), label: d.name.clone(), selected: d.id.0 == filter.department })
            .collect(),
        rows,
        total: queue.total,
        page,
        pages: queue.pages,
        prev_href: queue.first_key.as_ref().filter(|_| queue.has_prev).map(|k| {
            format!(
                "/console/cases?{}&before={}",
                filter_query(&filter, &filter.status, page.saturating_sub(1).max(1)),
                enc(k)
            )
        }),
        next_href: queue
            .last_key
            .as_ref()
            .filter(|_| queue.has_next)
            .map(|k| format!("/console/cases?{}&after={}", filter_query(&filter, &filter.status, page + 1), enc(k))),
        csv_href: format!("/console/cases.csv?{}", filter_query(&filter, &filter.status, 1)),
        can_triage: matches!(
            user.role,
            gridwork_model::catalog::Role::Supervisor | gridwork_model::catalog::Role::Administrator
        ),
        back: filter_query(&filter, &filter.status, page),
        bulk: bulk.map(|(n, refused)| (n, refused.to_owned())),
        index_behind,
        needs: needs
            .iter()
            .map(|n| (n.what, lang.t(n.what).to_owned(), n.count, format!("/console/cases?{}", n.query)))
            .collect(),
        page_jump_fields: [
            ("status", &filter.status),
            ("area", &filter.area),
            ("category", &filter.category),
            ("department", &filter.department),
            ("overdue", &filter.overdue),
            ("from", &filter.from),
            ("to", &filter.to),
            ("q", &filter.q),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.clone()))
        .collect(),
        filter,
        chrome,
    }
}

/// The queue as CSV (every matching case), in the page's language. Cells that a spreadsheet
/// would run as a formula are prefixed with `'`.
pub fn queue_csv(queue: &CaseQueue, catalog: &Catalog, lang: Lang) -> Result<Vec<u8>, crate::error::ServerError> {
    let calendar = DistrictCalendar::default();
    let rows: Vec<Vec<String>> = queue
        .rows
        .iter()
        .map(|r| {
            vec![
                r.code.clone(),
                r.title.clone(),
                status_label(lang, &r.status),
                grid_name(catalog, &r.grid),
                category_name(catalog, lang, &r.category),
                r.departments.iter().map(|d| department_name(catalog, d)).collect::<Vec<_>>().join(" "),
                minute(&calendar, r.reported_ms),
                minute(&calendar, r.deadline_ms),
                if r.overdue { "1".into() } else { String::new() },
                r.flags.join(" "),
                r.id.clone(),
            ]
        })
        .collect();
    let header = [
        "code",
        "title",
        "status",
        "grid",
        "category",
        "departments",
        "reported",
        "deadline",
        "overdue",
        "flags",
        "id",
    ];
    table_csv(lang, &header, &rows)
}
