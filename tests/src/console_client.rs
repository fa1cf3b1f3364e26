//! A console user as a harness drives one: a browser without JavaScript that keeps its session
//! cookie, reads each form's CSRF token from the page and follows no redirects. Errors are
//! returned, never panicked on: the chaos harness talks to a server it kills.

use std::collections::BTreeMap;

/// One answer: status, `Location` and body.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> Option<String> {
        let at = self.body.find("name=\"csrf\" value=\"")? + 19;
        self.body[at..].split('"').next().map(str::to_owned)
    }
}

#[derive(Debug)]
pub struct ConsoleClient {
    client: reqwest::blocking::Client,
    cookies: BTreeMap<String, String>,
}

impl ConsoleClient {
    pub fn new() -> Result<ConsoleClient, String> {
        // Plain HTTP on loopback; a TLS configuration is still needed to build a client.
        let tls = gridwork_core::tls::trust_nobody().map_err(|e| e.to_string())?;
        let client = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(ConsoleClient { client, cookies: BTreeMap::new() })
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, resp: reqwest::blocking::Response) -> Result<Page, String> {
        for c in resp.headers().get_all("set-cookie") {
            let text = c.to_str().map_err(|e| e.to_string())?;
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let Some((k, v)) = pair.split_once('=') else { continue };
            if v.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_owned);
        Ok(Page { status, location, body: resp.text().map_err(|e| e.to_string())? })
    }

    /// Sets a cookie as a browser's user could (to test that the server does not trust it).
    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.insert(name.to_owned(), value.to_owned());
    }

    pub fn get(&mut self, url: &str) -> Result<Page, String> {
        let resp = self.client.get(url).header("cookie", self.cookie_header()).send().map_err(|e| e.to_string())?;
        self.keep(resp)
    }

    /// A GET with the session's cookie, answered as it came (for photos: bytes and headers).
    pub fn get_raw(&self, url: &str) -> Result<reqwest::blocking::Response, String> {
        self.client.get(url).header("cookie", self.cookie_header()).send().map_err(|e| e.to_string())
    }

    pub fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Result<Page, String> {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let resp = self
            .client
            .post(url)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .map_err(|e| e.to_string())?;
        self.keep(resp)
    }

    /// Signs in at `base` (the server's URL); true when the console took the password.
    pub fn sign_in(&mut self, base: &str, user: &str, password: &str) -> Result<bool, String> {
        let form = self.get(&format!("{base}/console/login"))?;
        let csrf = form.csrf().ok_or("the sign-in page has no form")?;
        let page =
            self.post(&format!("{base}/console/login"), &[("csrf", &csrf), ("user", user), ("password", password)])?;
        Ok(page.status == 303)
    }

    /// Posts an action from the case page, with that page's token. The answer is the action's
    /// (303 when it was stored); a case page that does not load is returned as it came.
    pub fn act(&mut self, base: &str, case: &str, fields: &[(&str, &str)]) -> Result<Page, String> {
        let page = self.get(&format!("{base}/console/cases/{case}"))?;
        let Some(csrf) = page.csrf().filter(|_| page.status == 200) else { return Ok(page) };
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        self.post(&format!("{base}/console/cases/{case}/act"), &form)
    }
}
