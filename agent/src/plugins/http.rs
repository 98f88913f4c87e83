//! The `http` capability: requests to the hosts a node's operator listed for a plugin
//! (`http_hosts` in its grant), made by the agent. No redirects are followed (a listed host
//! could send the plugin anywhere), a response body is at most 1 MiB, and a request ends at
//! the hook's deadline.

use std::sync::OnceLock;
use std::time::Duration;

/// The largest response body a plugin gets.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// The largest request body.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
const MAX_HEADERS: usize = 32;

/// What a request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Whether `url`'s host (and port) is one the operator listed: `host` allows the scheme's
/// default port, `host:port` that port.
pub fn host_allowed(allowed: &[String], url: &reqwest::Url) -> bool {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let default_port = url.port().is_none();
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        match entry
            .rsplit_once(':')
            .filter(|(_, p)| p.parse::<u16>().is_ok())
        {
            Some((listed, listed_port)) => {
                listed.trim_matches(['[', ']']) == host.trim_matches(['[', ']'])
                    && listed_port.parse() == Ok(port)
            }
            None => default_port && entry == host,
        }
    })
}

/// The runtime requests run on: plugins call from blocking threads, any of them.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("plugin-http")
            .enable_all()
            .build()
            .expect("a runtime for plugin HTTP requests")
    })
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "proxlab-agent/",
                env!("CARGO_PKG_VERSION"),
                " (plugin)"
            ))
            .build()
            .expect("an HTTP client")
    })
}

/// Makes one request, if `url` is on the `allowed` list, within `timeout`. Blocking.
pub fn request(
    allowed: &[String],
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Response, String> {
    let url = reqwest::Url::parse(url).map_err(|err| format!("{url:?} is not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("only http and https URLs, not {}", url.scheme()));
    }
    if !host_allowed(allowed, &url) {
        let host = url.host_str().unwrap_or_default();
        return Err(format!(
            "the node's operator has not listed {host}{} for this plugin (http_hosts in its \
             grant)",
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ));
    }
    let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{method:?} is not an HTTP method"))?;
    if headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} headers"));
    }
    if body
        .as_ref()
        .is_some_and(|body| body.len() > MAX_REQUEST_BYTES)
    {
        return Err(format!(
            "a request body has at most {MAX_REQUEST_BYTES} bytes"
        ));
    }
    let mut request = client().request(method, url).timeout(timeout);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length") {
            return Err(format!("the {name} header is the agent's to set"));
        }
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| format!("the {name} header's value is not allowed"))?;
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let (done, answer) = std::sync::mpsc::channel();
    runtime().spawn(async move {
        let _ = done.send(send(request).await);
    });
    answer
        .recv_timeout(timeout + Duration::from_secs(1))
        .map_err(|_| "the request did not finish within the hook's deadline".to_owned())?
}

async fn send(request: reqwest::RequestBuilder) -> Result<Response, String> {
    let mut response = request.send().await.map_err(|err| describe(&err))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| describe(&err))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!(
                "the response body is larger than {MAX_BODY_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A failed request in words, with its causes.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(list: &[&str], url: &str) -> bool {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        host_allowed(&list, &reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn only_listed_hosts_and_ports_are_reached() {
        assert!(allowed(
            &["netbox.school.example"],
            "https://netbox.school.example/api/"
        ));
        assert!(allowed(
            &["NetBox.school.example"],
            "http://netbox.school.example/"
        ));
        assert!(!allowed(
            &["netbox.school.example"],
            "https://netbox.school.example:8443/"
        ));
        assert!(allowed(&["127.0.0.1:8080"], "http://127.0.0.1:8080/x"));
        assert!(!allowed(&["127.0.0.1:8080"], "http://127.0.0.1:8081/x"));
        assert!(!allowed(&["127.0.0.1:8080"], "http://127.0.0.1/x"));
        assert!(!allowed(
            &["school.example"],
            "https://evil.school.example/"
        ));
        assert!(!allowed(
            &["school.example"],
            "https://school.example.evil.test/"
        ));
        assert!(allowed(&["[::1]:9000"], "http://[::1]:9000/"));
        assert!(!allowed(&[], "https://school.example/"));
    }

    #[test]
    fn requests_to_unlisted_hosts_are_not_made() {
        let err = request(
            &["ipam.example".to_owned()],
            "GET",
            "http://127.0.0.1:9/",
            &[],
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.contains("has not listed 127.0.0.1:9"), "{err}");
        let err = request(
            &[],
            "GET",
            "file:///etc/passwd",
            &[],
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.contains("only http and https"), "{err}");
    }
}
