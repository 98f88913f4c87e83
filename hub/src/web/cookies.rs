//! The portal's cookies: reading them from requests and writing them with the right
//! attributes (always HttpOnly and SameSite=Lax; Secure when the portal is served over TLS).

use axum::http::HeaderMap;
use axum::http::header::COOKIE;

/// The browser session.
pub(crate) const SESSION: &str = "proxlab_session";
/// The login form's CSRF token (double-submit: cookie and form field must match).
pub(crate) const LOGIN_CSRF: &str = "proxlab_login";
/// A one-shot message for the next page.
pub(crate) const FLASH: &str = "proxlab_flash";
/// The `state` of an OpenID Connect sign-in under way, binding its callback to this browser.
pub(crate) const OIDC_STATE: &str = "proxlab_oidc";

/// The value of a cookie, if the request carries it.
pub(crate) fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value. `max_age` of `Some(0)` deletes the cookie; `None` makes it last
/// for the browser session.
pub(crate) fn set(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Percent-encodes everything but unreserved characters, for cookie values and URLs.
pub(crate) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The reverse of [`percent_encode`]; invalid escapes are kept as they are.
pub(crate) fn percent_decode(text: &str) -> String {
    form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn reads_a_cookie_among_several_headers() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; proxlab_session=abc"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(get(&headers, SESSION), Some("abc"));
        assert_eq!(get(&headers, "b"), Some("2"));
        assert_eq!(get(&headers, "missing"), None);
    }

    #[test]
    fn attributes() {
        let cookie = set(SESSION, "v", None, true);
        assert_eq!(
            cookie,
            "proxlab_session=v; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(set(FLASH, "", Some(0), false).ends_with("Max-Age=0"));
    }

    #[test]
    fn percent_round_trip() {
        for text in [
            "/vms?node=pve1&status=running",
            "Grüße; a=b",
            "100% done +1",
        ] {
            assert_eq!(percent_decode(&percent_encode(text)), text);
        }
        assert!(!percent_encode("a;b c").contains([';', ' ']));
    }
}
