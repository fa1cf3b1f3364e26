//! Administration (`/console/admin`): devices, quarantine, people, categories, grids and the
//! escalation rules; every form checked for its CSRF token, then by the store for the role.

use super::*;

pub(super) async fn admin(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let done = q.contains_key("done");
    let note = q.get("note").cloned();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let (devices, quarantine, people, catalog, policy) = with_console(store, &session, move |console| {
            Ok((
                console.devices(&user, now_ms())?,
                console.quarantine(&user)?,
                console.people(&user)?,
                console.catalog(&user),
                console.escalation_policy(&user)?,
            ))
        })
        .await?;
        let mut c = chrome(lang, lang.t("admin"), Some(&session));
        if done {
            c.notice = Some(match note {
                Some(n) => format!("{}: {n}", lang.t("done")),
                None => lang.t("done").to_owned(),
            });
        }
        Ok(html(StatusCode::OK, views::admin_page(c, &catalog, &devices, quarantine, &people, &policy).render()))
    })
    .await
}

/// An administration form: the CSRF token first, then the store checks the role again.
pub(super) async fn admin_action(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(action): Path<String>,
    form: RawForm,
) -> Response {
    let f = form_map(&form);
    let store = state.store.clone();
    let server_url = format!(
        "{}://{}",
        if state.secure { "https" } else { "http" },
        headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1")
    );
    signed_in(&state, &headers, &HashMap::new(), |lang, session| async move {
        check_csrf(&session, &f).map_err(|e| (session.clone(), e))?;
        let user = session.user.clone();
        match with_console(store, &session, move |console| admin_change(console, &user, &action, &f, &server_url))
            .await?
        {
            AdminOutcome::Done(None) => Ok(redirect("/console/admin?done=1")),
            AdminOutcome::Done(Some(note)) => {
                Ok(redirect(&format!("/console/admin?done=1&note={}", views::enc(&note))))
            }
            AdminOutcome::Enrolled { for_user, device, code, uri } => {
                let qr_svg = views::qr_svg(&uri).map_err(|e| (session.clone(), e))?;
                let page = views::EnrolledPage {
                    chrome: chrome(lang, lang.t("enrol_device"), Some(&session)),
                    user: for_user,
                    device,
                    code,
                    uri,
                    qr_svg,
                };
                Ok(html(StatusCode::OK, page.render()))
            }
        }
    })
    .await
}

/// What an administration form did.
pub(super) enum AdminOutcome {
    /// Done, with something to tell the administrator (e.g. overlapping grids).
    Done(Option<String>),
    /// A device was enrolled: show its one-time code and QR code.
    Enrolled { for_user: String, device: String, code: String, uri: String },
}

/// The escalation policy an administration form describes; a typed error names the field.
pub(super) fn escalation_form(
    console: &dyn ConsoleStore,
    user: &crate::store::console::ConsoleUser,
    get: &dyn Fn(&str) -> String,
) -> Result<crate::rules::escalation::Policy, ServerError> {
    use crate::rules::escalation::{parse_rules, Policy};
    let bad = |e: &dyn std::fmt::Display| ServerError::BadRequest(e.to_string());
    let minute = |field: &str| -> Result<u16, ServerError> {
        let v = get(field);
        v.split_once(':')
            .and_then(|(h, m)| Some(h.parse::<u16>().ok()? * 60 + m.parse::<u16>().ok().filter(|m| *m < 60)?))
            .ok_or_else(|| ServerError::BadRequest(format!("{field} {v:?}: write a time as HH:MM")))
    };
    let weekdays = get("weekdays")
        .split_whitespace()
        .map(|d| {
            d.parse::<u8>().map_err(|_| ServerError::BadRequest(format!("weekday {d:?}: 1 (Monday) to 7 (Sunday)")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dates = |field: &str| get(field).split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let mut policy = Policy {
        working_hours: gridwork_model::time::WorkingHours {
            weekdays,
            start_minute: minute("start")?,
            end_minute: minute("end")?,
            holidays: dates("holidays"),
            extra_workdays: dates("extra_workdays"),
        },
        default_rules: parse_rules(&get("default_rules")).map_err(|e| bad(&e))?,
        by_category: Default::default(),
    };
    for c in &console.catalog(user).categories {
        let text = get(&format!("rules_{}", c.id.0));
        let own = match text.trim() {
            "" => continue,
            "none" => vec![],
            t => parse_rules(t).map_err(|e| ServerError::BadRequest(format!("{}: {e}", c.id.0)))?,
        };
        policy.by_category.insert(c.id.0.clone(), own);
    }
    Ok(policy)
}

/// Applies one administration form.
pub(super) fn admin_change(
    console: &dyn ConsoleStore,
    user: &crate::store::console::ConsoleUser,
    action: &str,
    f: &HashMap<String, String>,
    server_url: &str,
) -> Result<AdminOutcome, ServerError> {
    // The store checks each administration method itself (a "person" form's password too,
    // `set_person_password`); this refuses everyone else before anything is read.
    user.must_administer()?;
    let get = |k: &str| f.get(k).map(|v| v.trim().to_owned()).unwrap_or_default();
    let now = now_ms();
    match action {
        "enrol" => {
            let for_user = get("user");
            let (device, code) = console.enrol(user, &for_user, now)?;
            let uri = gridwork_model::wire::EnrolmentCode {
                server: server_url.to_owned(),
                code: code.clone(),
                ca_fingerprint: console.ca_fingerprint(),
                alternates: vec![],
            }
            .to_uri();
            return Ok(AdminOutcome::Enrolled { for_user, device, code, uri });
        }
        "retire" => console.retire(user, &get("device"), now)?,
        "revoke" => console.revoke(user, &get("device"))?,
        "wipe" => console.wipe(user, &get("device"), now)?,
        "release" => console.release(user, &get("key"), now)?,
        "reject" => console.reject(user, &get("key"))?,
        "person" => {
            let role = gridwork_model::catalog::Role::parse(&get("role"))
                .ok_or_else(|| ServerError::BadRequest("unknown role".into()))?;
            let department = Some(get("department")).filter(|d| !d.is_empty());
            let person = crate::store::console::PersonView {
                id: get("id"),
                role,
                department,
                scopes: get("scopes").split_whitespace().map(str::to_owned).collect(),
                has_password: false,
            };
            console.set_person(user, &person)?;
            let password = f.get("password").cloned().unwrap_or_default();
            if !password.is_empty() {
                // In the store the signed-in administrator's session belongs to, as the person
                // was just set there: never found by a name the form could spell.
                console.set_person_password(user, &person.id, &password, now)?;
            }
        }
        "category" => {
            let id = get("id");
            let hours: u32 = get("hours")
                .parse()
                .ok()
                .filter(|h| (1..=2160).contains(h))
                .ok_or_else(|| ServerError::BadRequest("a deadline is 1 to 2160 hours".into()))?;
            let mut catalog = gridwork_model::catalog::Catalog::clone(&console.catalog(user));
            let c = catalog
                .categories
                .iter_mut()
                .find(|c| c.id.0 == id)
                .ok_or_else(|| ServerError::NotFound(format!("category {id}")))?;
            c.default_deadline_hours = hours;
            c.retired = get("retired") == "1";
            console.set_catalog(user, &catalog)?;
        }
        "escalation" => console.set_escalation_policy(user, &escalation_form(console, user, &get)?)?,
        "grids" => {
            let datum = match get("datum").as_str() {
                "gcj02" => gridwork_model::geo::Datum::Gcj02,
                _ => gridwork_model::geo::Datum::Wgs84,
            };
            let file = crate::grids::parse(f.get("geojson").map(String::as_str).unwrap_or(""), datum)
                .map_err(|e| ServerError::BadRequest(e.to_string()))?;
            let merged = crate::grids::merge(&console.catalog(user), &file);
            let version = console.set_catalog(user, &merged)?;
            let mut note = format!("{} grids imported; reference data version {version}", file.grids.len());
            if !file.overlaps.is_empty() {
                let pairs: Vec<String> = file.overlaps.iter().map(|(a, b)| format!("{a} & {b}")).collect();
                note.push_str(&format!("; overlapping grids: {}", pairs.join(", ")));
            }
            return Ok(AdminOutcome::Done(Some(note)));
        }
        other => return Err(ServerError::NotFound(format!("administration action {other:?}"))),
    }
    Ok(AdminOutcome::Done(None))
}

/// The administration lists as CSV: `?list=devices|quarantine|people`.
pub(super) async fn admin_csv(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let list = q.get("list").cloned().unwrap_or_default();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let name = format!("gridwork-{list}.csv");
        let body = with_console(store, &session, move |console| {
            let (header, rows): (&[&str], Vec<Vec<String>>) = match list.as_str() {
                "devices" => (
                    &[
                        "device",
                        "code",
                        "user",
                        "status",
                        "oldest_unsynced_min",
                        "last_seen",
                        "signed_links",
                        "chain_holes",
                        "chain_forks",
                    ],
                    console
                        .devices(&user, now_ms())?
                        .into_iter()
                        .map(|d| {
                            vec![
                                d.id,
                                d.code,
                                d.user,
                                d.status,
                                d.unsynced_age_ms.map(|a| (a / 60_000).to_string()).unwrap_or_default(),
                                d.last_seen_ms
                                    .map(|t| gridwork_model::time::DistrictCalendar::default().minute_of(t))
                                    .unwrap_or_default(),
                                // Empty for an app older than signing.
                                d.chain.as_ref().map(|c| c.links.to_string()).unwrap_or_default(),
                                d.chain.as_ref().map(|c| c.holes.to_string()).unwrap_or_default(),
                                d.chain.as_ref().map(|c| c.forks.to_string()).unwrap_or_default(),
                            ]
                        })
                        .collect(),
                ),
                "quarantine" => (
                    &["key", "case", "device", "reason", "status"],
                    console
                        .quarantine(&user)?
                        .into_iter()
                        .map(|q| vec![q.key, q.doc_id, q.device_id, q.reason, q.status])
                        .collect(),
                ),
                "people" => (
                    &["user", "role", "department", "scopes"],
                    console
                        .people(&user)?
                        .into_iter()
                        .map(|p| {
                            vec![p.id, p.role.as_str().to_owned(), p.department.unwrap_or_default(), p.scopes.join(" ")]
                        })
                        .collect(),
                ),
                other => {
                    return Err(ServerError::NotFound(format!("list {other:?}: use devices, quarantine or people")))
                }
            };
            views::table_csv(lang, header, &rows)
        })
        .await?;
        Ok(csv_response(&name, body))
    })
    .await
}
