//! Signing in and out, and a city-level person's choice of district.

use super::*;

pub(super) async fn login_form(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (lang, remember) = language(&headers, &q);
    if let Ok(Some(_)) = current_session(&state, &headers).await {
        return redirect("/console/cases");
    }
    login_page(lang, remember, state.secure, String::new(), None, StatusCode::OK)
}

pub(super) fn login_page(
    lang: Lang,
    remember: bool,
    secure: bool,
    user: String,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let mut token = [0u8; 16];
    if getrandom::fill(&mut token).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no randomness for the sign-in form").into_response();
    }
    let token = hex::encode(token);
    let mut c = chrome(lang, lang.t("sign_in"), None);
    c.csrf = token.clone();
    c.error = error;
    let mut resp = html(status, views::LoginPage { chrome: c, user }.render());
    let (k, v) = set_cookie(LOGIN_COOKIE, &token, 3600, secure);
    resp.headers_mut().append(k, v);
    with_lang(resp, lang, remember, secure)
}

pub(super) async fn login(State(state): State<ConsoleState>, headers: HeaderMap, form: RawForm) -> Response {
    let (lang, _) = language(&headers, &HashMap::new());
    let f = form_map(&form);
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    // Double submit: the form's token must match the cookie set with the form.
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || get("csrf") != expected {
        return error_page(lang, None, &ServerError::CsrfMismatch);
    }
    let (user, password) = (get("user"), get("password"));
    let store = state.store.clone();
    let u = user.clone();
    match call(store, move |console| console.sign_in(&u, &password, now_ms())).await {
        Ok((token, _)) => {
            let mut resp = redirect("/console/cases");
            let (k, v) = set_cookie(SESSION_COOKIE, &token, crate::store::console::SESSION_MS / 1000, state.secure);
            resp.headers_mut().append(k, v);
            let (k, v) = set_cookie(LOGIN_COOKIE, "", 0, state.secure);
            resp.headers_mut().append(k, v);
            resp
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status_and_code().0).unwrap_or(StatusCode::UNAUTHORIZED);
            login_page(lang, false, state.secure, user, Some(e.to_string()), status)
        }
    }
}

pub(super) async fn logout(State(state): State<ConsoleState>, headers: HeaderMap, form: RawForm) -> Response {
    let (lang, _) = language(&headers, &HashMap::new());
    let session = match current_session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return redirect("/console/login"),
        Err(e) => return error_page(lang, None, &e),
    };
    if let Err(e) = check_csrf(&session, &form_map(&form)) {
        return error_page(lang, Some(&session), &e);
    }
    let store = state.store.clone();
    let token = cookie(&headers, SESSION_COOKIE).unwrap_or_default();
    if let Err(e) = call(store, move |console| console.sign_out(&token)).await {
        return error_page(lang, Some(&session), &e);
    }
    let mut resp = redirect("/console/login");
    for name in [SESSION_COOKIE, DISTRICT_COOKIE] {
        let (k, v) = set_cookie(name, "", 0, state.secure);
        resp.headers_mut().append(k, v);
    }
    resp
}

/// The districts a city-level person may look at.
pub(super) async fn districts(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let store = state.store.clone();
    signed_in(&state, &headers, &q, |lang, session| async move {
        let user = session.user.clone();
        let districts = with_console(store, &session, move |console| console.districts(&user)).await?;
        let page = views::DistrictsPage { chrome: chrome(lang, lang.t("districts"), Some(&session)), districts };
        Ok(html(StatusCode::OK, page.render()))
    })
    .await
}

/// A city-level person chooses the district the pages show (empty: the city centre's own).
pub(super) async fn choose_district(State(state): State<ConsoleState>, headers: HeaderMap, form: RawForm) -> Response {
    let f = form_map(&form);
    let store = state.store.clone();
    let secure = state.secure;
    signed_in(&state, &headers, &HashMap::new(), |_, session| async move {
        check_csrf(&session, &f).map_err(|e| (session.clone(), e))?;
        let chosen = f.get("district").cloned().unwrap_or_default();
        let user = session.user.clone();
        let known = with_console(store, &session, move |console| console.districts(&user)).await?;
        if !chosen.is_empty() && !known.contains(&chosen) {
            return Err((
                session,
                ServerError::NotFound(format!("no district {chosen}: choose one on the districts page")),
            ));
        }
        let mut resp = redirect("/console/cases");
        let (k, v) = set_cookie(DISTRICT_COOKIE, &chosen, crate::store::console::SESSION_MS / 1000, secure);
        resp.headers_mut().append(k, v);
        Ok(resp)
    })
    .await
}
