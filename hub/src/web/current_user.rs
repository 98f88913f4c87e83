//! Who a request comes from, as the handlers and the page layout see it. The middleware and
//! extractors that establish it are in `identity`.

use crate::domain::auth::{ActiveSession, Credential};
use crate::domain::viewer::Viewer;

/// A signed-in user.
#[derive(Debug, Clone)]
pub(crate) struct CurrentUser {
    pub viewer: Viewer,
    /// The browser session, if the request came with one (not with an API token).
    pub session: Option<ActiveSession>,
    /// What the request signed in with, to check again later.
    pub credential: Credential,
}

impl CurrentUser {
    pub(crate) fn csrf_token(&self) -> &str {
        self.session
            .as_ref()
            .map_or("", |session| session.csrf_token.as_str())
    }
}
