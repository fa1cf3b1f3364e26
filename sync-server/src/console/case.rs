//! One case's page (`/console/cases/{id}`): its view, the actions a person's role allows, its
//! photos and its evidence bundle.

use super::*;

pub(super) async fn case_detail(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    let done = q.contains_key("done");
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let (view, catalog) =
            with_console(store, &session, move |console| Ok((console.case_view(&user, &id)?, console.catalog(&user))))
                .await?;
        let mut c = chrome(lang, &view.case.code, Some(&session));
        if done {
            c.notice = Some(lang.t("done").to_owned());
        }
        let page = views::case_page(c, &catalog, &session.user, &view, now_ms());
        Ok(html(StatusCode::OK, page.render()))
    })
    .await
}

/// The action a posted case form asks for.
pub(super) fn parse_action(
    f: &HashMap<String, String>,
    session: &Session,
    view: Option<&crate::store::console::CaseView>,
    now: i64,
) -> Result<ConsoleAction, ServerError> {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let note = get("note");
    if note.chars().count() > 2000 {
        return Err(ServerError::BadRequest("a note has at most 2000 characters".into()));
    }
    let own_department = || {
        session
            .user
            .department
            .as_deref()
            .map(DepartmentId::from)
            .ok_or_else(|| ServerError::Forbidden("you belong to no department".into()))
    };
    let kind = match get("action").as_str() {
        "accept" => EventKind::Accept { note },
        "reject" => EventKind::Reject {
            reason: match get("reason").as_str() {
                "out_of_scope" => RejectReason::OutOfScope,
                _ => RejectReason::Duplicate,
            },
            duplicate_of: None,
            note,
        },
        "dispatch" => {
            let departments: Vec<DepartmentId> = f
                .keys()
                .filter_map(|k| k.strip_prefix("dept_"))
                .map(DepartmentId::from)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if departments.is_empty() {
                return Err(ServerError::BadRequest("choose at least one department to dispatch to".into()));
            }
            let hours: i64 =
                get("hours").parse().ok().filter(|h| (1..=2160).contains(h)).ok_or_else(|| {
                    ServerError::BadRequest("the deadline is a number of hours from 1 to 2160".into())
                })?;
            EventKind::Dispatch { departments, deadline_ms: now + hours * 3_600_000 }
        }
        "start" => EventKind::Start { department: own_department()? },
        "handler_report" => EventKind::HandlerReport { department: own_department()?, note, evidence: vec![] },
        "urge" => EventKind::Urge { note },
        "escalate" => EventKind::Escalate {
            to: match get("level").as_str() {
                "community" => Level::Community,
                "district" => Level::District,
                _ => Level::Street,
            },
            note,
        },
        "return" if !note.trim().is_empty() => EventKind::Return { reason: note },
        "return" => return Err(ServerError::BadRequest("say why the case goes back".into())),
        "close" => EventKind::Close { note },
        "note" if !note.trim().is_empty() => EventKind::Note { text: note },
        "note" => return Err(ServerError::BadRequest("the note is empty".into())),
        "settle" => EventKind::Settle {
            chosen: gridwork_model::ids::EventId::parse(&get("chosen"))
                .map_err(|_| ServerError::BadRequest("no decision chosen".into()))?,
        },
        "keep" => {
            let view = view.ok_or_else(|| ServerError::Internal("case not loaded".into()))?;
            let index: usize =
                get("index").parse().map_err(|_| ServerError::BadRequest("which value to keep?".into()))?;
            let case = &view.case;
            let missing = || ServerError::BadRequest("that value is no longer in conflict: reload the page".into());
            let patch = match get("field").as_str() {
                keys::TITLE => CasePatch {
                    title: Some(case.title.conflicts.get(index).ok_or_else(missing)?.clone()),
                    ..Default::default()
                },
                keys::CATEGORY => CasePatch {
                    category: Some(case.category.conflicts.get(index).ok_or_else(missing)?.clone()),
                    ..Default::default()
                },
                keys::GRID => CasePatch {
                    grid: Some(case.grid.conflicts.get(index).ok_or_else(missing)?.clone()),
                    ..Default::default()
                },
                keys::LOCATION => CasePatch {
                    location: Some(case.location.conflicts.get(index).ok_or_else(missing)?.clone()),
                    ..Default::default()
                },
                other => return Err(ServerError::BadRequest(format!("{other:?} is not a field with conflicts"))),
            };
            return Ok(ConsoleAction::Keep(patch));
        }
        other => return Err(ServerError::BadRequest(format!("unknown action {other:?}"))),
    };
    Ok(ConsoleAction::Event(kind))
}

pub(super) async fn act(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: RawForm,
) -> Response {
    let f = form_map(&form);
    let store = state.store.clone();
    signed_in(&state, &headers, &HashMap::new(), |_lang, session| async move {
        // The token first: a forged form learns nothing and changes nothing.
        check_csrf(&session, &f).map_err(|e| (session.clone(), e))?;
        let s = session.clone();
        let case_id = id.clone();
        with_console(store, &session, move |console| {
            let now = now_ms();
            let view = if f.get("action").map(String::as_str) == Some("keep") {
                Some(console.case_view(&s.user, &case_id)?)
            } else {
                None
            };
            let action = parse_action(&f, &s, view.as_ref(), now)?;
            console.act(&s.user, &case_id, action, now)
        })
        .await?;
        Ok(redirect(&format!("/console/cases/{}?done=1", views::enc(&id))))
    })
    .await
}

/// The media type of a stored photo or thumbnail, from its first bytes.
pub(super) fn image_type(bytes: &[u8]) -> &'static str {
    match bytes {
        [0xFF, 0xD8, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        _ => "application/octet-stream",
    }
}

pub(super) async fn photo(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(sha256): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |_lang, session| async move {
        let user = session.user.clone();
        let bytes = with_console(store, &session, move |console| console.photo(&user, &sha256)).await?;
        // Content-addressed: the bytes behind a hash never change.
        Ok((
            StatusCode::OK,
            [(CONTENT_TYPE, image_type(&bytes)), (CACHE_CONTROL, "private, max-age=31536000, immutable")],
            bytes,
        )
            .into_response())
    })
    .await
}

/// The case's evidence bundle as a download (`gridwork-verify` checks it).
pub(super) async fn bundle(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |_lang, session| async move {
        let user = session.user.clone();
        let bytes = with_console(store, &session, move |console| console.bundle(&user, &id, now_ms())).await?;
        let code = gridwork_model::bundle::case_code(&bytes).unwrap_or_default();
        let disposition = format!("attachment; filename=\"case-{code}.gridwork-bundle\"");
        Ok((
            StatusCode::OK,
            [
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (
                    axum::http::header::CONTENT_DISPOSITION,
                    HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
                ),
                (CACHE_CONTROL, HeaderValue::from_static("private, no-store")),
            ],
            bytes,
        )
            .into_response())
    })
    .await
}
