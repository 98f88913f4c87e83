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

    /// A PUT with a JSON body.
    pub async fn api_put_json(&self, path: &str, body: &serde_json::Value) -> Response {
        let mut builder = self.request(Method::PUT, path).json(body);
        if self.bearer.is_none() {
            builder = builder.header("X-CSRF-Token", &self.csrf);
        }
        builder.send().await.unwrap()
    }

    /// An API call that changes state, with a JSON body.
    pub async fn api_post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        let mut builder = self.request(Method::POST, path).json(body);
        if self.bearer.is_none() {
            builder = builder.header("X-CSRF-Token", &self.csrf);
        }
        builder.send().await.unwrap()
    }

    pub async fn api_delete(&self, path: &str) -> Response {
        let mut builder = self.request(Method::DELETE, path);
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

/// A Server-Sent Events stream, read event by event.
pub struct EventStream {
    response: Response,
    buffer: String,
}

impl EventStream {
    pub async fn open(client: &WebClient, path: &str) -> Self {
        let response = client.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event as `(name, data)`; keep-alive comments are skipped.
    pub async fn next(&mut self) -> (String, serde_json::Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return (name, serde_json::from_str(&data).unwrap());
            }
            let chunk = self
                .response
                .chunk()
                .await
                .unwrap()
                .expect("the event stream ended");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Waits for the server to end the stream, and returns the names of the events it sent
    /// until then.
    pub async fn ended(&mut self) -> Vec<String> {
        super::within("the event stream to end", async {
            let mut names = Vec::new();
            while let Some(chunk) = self.response.chunk().await.unwrap() {
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
                for line in self.buffer.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        names.push(name.trim().to_owned());
                    }
                }
                self.buffer.clear();
            }
            names
        })
        .await
    }

    /// Reads events until `matches` accepts one; every event read is given to `seen` first.
    pub async fn until(
        &mut self,
        what: &str,
        mut seen: impl FnMut(&str, &serde_json::Value),
        matches: impl Fn(&str, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        super::within(what, async {
            loop {
                let (name, data) = self.next().await;
                seen(&name, &data);
                if matches(&name, &data) {
                    return data;
                }
            }
        })
        .await
    }
}

/// A new invite for the class from `teacher`, used by `student` to join; the join's answer.
pub async fn join_class(
    teacher: &WebClient,
    student: &WebClient,
    class_id: i64,
) -> serde_json::Value {
    let invite: serde_json::Value = teacher
        .api_post(&format!("/api/v1/classes/{class_id}/invite"))
        .await
        .json()
        .await
        .unwrap();
    student
        .api_post(&format!(
            "/api/v1/join/{}",
            invite["token"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap()
}

/// Adds `add` student VMs to a class as its teacher; the job that makes them.
pub async fn add_capacity(teacher: &WebClient, class_id: i64, add: u32) -> u64 {
    let started: serde_json::Value = teacher
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/capacity"),
            &serde_json::json!({"add": add}),
        )
        .await
        .json()
        .await
        .unwrap();
    started["job"]
        .as_u64()
        .unwrap_or_else(|| panic!("no job: {started}"))
}
