//! Who is asking: the signed-in user every domain operation acts for, and every audit entry
//! names.

use serde::Serialize;

use crate::db::users::{Role, UserRow};

/// A signed-in user, as handlers see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Viewer {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Teachers and admins.
    pub fn is_staff(&self) -> bool {
        self.role >= Role::Teacher
    }
}

impl From<&UserRow> for Viewer {
    fn from(user: &UserRow) -> Self {
        Self {
            id: user.id,
            username: user.username.clone(),
            role: user.role,
        }
    }
}
