//! From what a sign-in source says about a person's groups to a proxlab role.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::db::users::Role;

/// Group (or claim value) → role, with the role of everyone else. A person in several mapped
/// groups gets the highest of their roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    #[serde(default)]
    pub roles: BTreeMap<String, RoleName>,
    #[serde(default)]
    pub default_role: RoleName,
}

/// A role as the config file spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleName {
    #[default]
    Student,
    Teacher,
    Admin,
}

impl From<RoleName> for Role {
    fn from(name: RoleName) -> Self {
        match name {
            RoleName::Student => Role::Student,
            RoleName::Teacher => Role::Teacher,
            RoleName::Admin => Role::Admin,
        }
    }
}

impl RoleMapping {
    /// The role for someone in `groups`. Group names compare without regard to case, as
    /// directories do (`CN=Teachers` and `cn=teachers` are one group).
    pub fn role_for<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> Role {
        let groups: Vec<String> = groups.into_iter().map(str::to_lowercase).collect();
        self.roles
            .iter()
            .filter(|(group, _)| groups.contains(&group.to_lowercase()))
            .map(|(_, role)| Role::from(*role))
            .max()
            .unwrap_or(self.default_role.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_mapped_role_wins_and_others_get_the_default() {
        let mapping: RoleMapping = toml::from_str(
            "default_role = \"student\"\n[roles]\n\"CN=Teachers,DC=school\" = \"teacher\"\nit-admins = \"admin\"",
        )
        .unwrap();
        assert_eq!(mapping.role_for(["cn=teachers,dc=school"]), Role::Teacher);
        assert_eq!(
            mapping.role_for(["CN=Teachers,DC=school", "IT-Admins"]),
            Role::Admin
        );
        assert_eq!(mapping.role_for(["pupils"]), Role::Student);
        assert_eq!(mapping.role_for([]), Role::Student);
        assert!(toml::from_str::<RoleMapping>("default_role = \"root\"").is_err());
    }
}
