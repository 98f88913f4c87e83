//! An HTTP client for the portal and API, as a browser or script would use them: cookies
//! kept, redirects not followed (tests look at them), CSRF tokens read from pages.

use reqwest::{Method, Response, StatusCode};

/// A client with its own cookie jar.
pub struct WebClient {
    pub client: reqwest::Client,
    pub base: String,
    /// The session's CSRF token, once signed in.
    pub csrf: String,
    /// A personal API token to send as `Authorization: Bearer`, instead of cookies.
    pub bearer: Option<String>,
}

/// The value of the first hidden `csrf` field in a page.
pub fn csrf_field(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("the page has a csrf field") + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

impl WebClient {
    pub fn anonymous(base: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            csrf: String::new(),
            bearer: None,
        }
    }

    pub fn with_token(base: &str, token: &str) -> Self {
        let mut client = Self::anonymous(base);
        client.bearer = Some(token.to_owned());
        client
    }

    /// Submits the login form; returns the response (a redirect on success).
    pub async fn try_login(&self, username: &str, password: &str) -> Response {
        let page = self.get("/login").await.text().await.unwrap();
        let csrf = csrf_field(&page);
        self.client
            .post(format!("{}/login", self.base))
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", username),
                ("password", password),
                ("next", "/vms"),
            ])
            .send()
            .await
            .unwrap()
    }

    /// Signs in, asserting success, and learns the session's CSRF token.
    pub async fn login(base: &str, username: &str, password: &str) -> Self {
        let mut client = Self::anonymous(base);
        let response = client.try_login(username, password).await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "login as {username}"
        );
        let session: serde_json::Value = client.get("/api/v1/session").await.json().await.unwrap();
        client.csrf = session["csrf_token"].as_str().unwrap().to_owned();
        client
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match &self.bearer {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.unwrap()
    }

    /// A form post with the session's CSRF token added.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        let mut form: Vec<(&str, &str)> = vec![("csrf", self.csrf.as_str())];
        form.extend_from_slice(fields);
        self.request(Method::POST, path)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// A form post without any CSRF token.
    pub async fn post_form_without_csrf(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.request(Method::POST, path)
            .form(fields)
            .send()
            .await
            .unwrap()
    }

    /// An API call that changes state, with the CSRF header for cookie sessions.
    pub async fn api_post(&self, path: &str) -> Response {
        let mut builder = self.request(Method::POST, path);
        if self.bearer.is_none() {
            builder = builder.header("X-CSRF-Token", &self.csrf);
        }
        builder.send().await.unwrap()
    }

    /// A JSON GET that must succeed.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }
}
