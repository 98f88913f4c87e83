//! Plugins 0.2 at the hub: the settings admins give a plugin for the site and teachers for
//! their class (checked against the plugin's manifest), and the facts its hooks are told.

use std::collections::BTreeMap;

use proxlab_protocol::plugin_manifest::{Manifest, SettingSpec};
use proxlab_protocol::plugins::{PluginClass, PluginSettingValues, PluginStudent};

use super::classes::name_stem;
use super::plugins::PluginFault;
use crate::HubState;
use crate::db::classes::ClassRow;
use crate::db::plugin_settings::SITE;
use crate::domain::audit::{self, Outcome};
use crate::domain::viewer::Viewer;

/// One setting as a form shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SettingField {
    pub name: String,
    /// `string`, `integer` or `boolean`.
    pub kind: &'static str,
    pub description: String,
    pub per_class: bool,
    /// The value set at this level, as text; empty when none is.
    pub value: String,
    /// What applies when none is set here: the site's value or the default, as text.
    pub inherited: String,
}

/// A stored plugin's manifest.
async fn manifest(state: &HubState, plugin: &str) -> Result<Manifest, PluginFault> {
    let text = state
        .db
        .plugin_manifest(plugin)
        .await?
        .ok_or(PluginFault::NotFound)?;
    Manifest::parse(&text).map_err(PluginFault::Invalid)
}

/// The settings a form shows for `plugin` at the site (`class_id` `None`) or for one class
/// (only those its teachers may set).
pub async fn fields(
    state: &HubState,
    plugin: &str,
    class_id: Option<i64>,
) -> Result<Vec<SettingField>, PluginFault> {
    let manifest = manifest(state, plugin).await?;
    let site = state.db.plugin_settings(plugin, SITE).await?;
    let here = match class_id {
        Some(class_id) => state.db.plugin_settings(plugin, class_id).await?,
        None => site.clone(),
    };
    Ok(manifest
        .settings
        .iter()
        .filter(|(_, spec)| class_id.is_none() || spec.per_class)
        .map(|(name, spec)| {
            let fallback = match class_id {
                Some(_) => site.get(name).or(spec.default.as_ref()),
                None => spec.default.as_ref(),
            };
            SettingField {
                name: name.clone(),
                kind: spec.kind.as_str(),
                description: spec.description.clone(),
                per_class: spec.per_class,
                value: here.get(name).map(|v| v.to_text()).unwrap_or_default(),
                inherited: fallback.map(|v| v.to_text()).unwrap_or_default(),
            }
        })
        .collect())
}

/// Replaces `plugin`'s settings for the site or one class with what a form or the API gave
/// (text per name; an empty field unsets). Every value is checked against the manifest: a
/// class may set only the settings its manifest lets classes set.
pub async fn save(
    state: &HubState,
    viewer: &Viewer,
    plugin: &str,
    class_id: Option<i64>,
    given: &BTreeMap<String, String>,
) -> Result<(), PluginFault> {
    let manifest = manifest(state, plugin).await?;
    let mut values = BTreeMap::new();
    for (name, text) in given {
        let spec: &SettingSpec = manifest.settings.get(name).ok_or_else(|| {
            PluginFault::Invalid(format!("plugin {plugin} has no setting {name:?}"))
        })?;
        if class_id.is_some() && !spec.per_class {
            return Err(PluginFault::Invalid(format!(
                "setting {name} of plugin {plugin} is set for the whole site only"
            )));
        }
        if let Some(value) = spec
            .parse_value(text)
            .map_err(|reason| PluginFault::Invalid(format!("setting {name}: {reason}")))?
        {
            values.insert(name.clone(), value);
        }
    }
    let scope = class_id.unwrap_or(SITE);
    state.db.set_plugin_settings(plugin, scope, &values).await?;
    let target = match class_id {
        Some(class_id) => format!("{plugin} class {class_id}"),
        None => plugin.to_owned(),
    };
    // The names only: a value may be a token.
    let names: Vec<&str> = values.keys().map(String::as_str).collect();
    audit::record(
        &state.db,
        viewer,
        "plugin.settings",
        &target,
        Outcome::Ok,
        &format!("set: {}", names.join(", ")),
    )
    .await;
    Ok(())
}

/// Each plugin's settings as a class's hooks get them: the class's values over the site's
/// over the defaults. A plugin whose stored values no longer fit its manifest (it was
/// replaced by a version with other settings) gets those that do, and the rest is logged.
pub async fn resolved(
    state: &HubState,
    class_id: i64,
    plugins: &[String],
) -> Result<PluginSettingValues, PluginFault> {
    let mut resolved = BTreeMap::new();
    for plugin in plugins {
        let manifest = manifest(state, plugin).await?;
        let fitting = |layer: BTreeMap<_, _>, per_class: bool| -> BTreeMap<_, _> {
            layer
                .into_iter()
                .filter(|(name, value)| {
                    let fits = manifest.settings.get(name).is_some_and(|spec| {
                        (!per_class || spec.per_class) && spec.check_value(value).is_ok()
                    });
                    if !fits {
                        tracing::warn!(%plugin, %name, "a stored setting no longer fits the plugin; left out");
                    }
                    fits
                })
                .collect()
        };
        let site = fitting(state.db.plugin_settings(plugin, SITE).await?, false);
        let class = fitting(state.db.plugin_settings(plugin, class_id).await?, true);
        let values = manifest
            .resolve_settings(&[&site, &class])
            .map_err(PluginFault::Invalid)?;
        resolved.insert(plugin.clone(), values);
    }
    Ok(resolved)
}

/// The class as plugins see it.
pub async fn class_facts(state: &HubState, class: &ClassRow) -> Result<PluginClass, PluginFault> {
    let template = match class.template {
        Some(key) => Some(format!(
            "{}/{}",
            cluster_name(state, key.cluster).await?,
            key.vmid
        )),
        None => None,
    };
    Ok(PluginClass {
        id: class.id,
        name: class.name.clone(),
        slug: name_stem(&class.name, class.id),
        description: class.description.clone(),
        course_code: None,
        owners: state.db.class_owners(class.id).await?,
        seats: class.seats,
        template,
        cores: class.cores,
        memory_mib: class.memory_mib.and_then(|mib| u32::try_from(mib).ok()),
    })
}

/// A student as plugins see them (`None` for an unknown username).
pub async fn student_facts(
    state: &HubState,
    username: &str,
) -> Result<Option<PluginStudent>, PluginFault> {
    let Some(user) = state.db.user_by_name(username).await? else {
        return Ok(None);
    };
    let id = user.id;
    // Accounts without a display name go by their username.
    let display_name = match user.display_name.trim() {
        "" => user.username.clone(),
        name => name.to_owned(),
    };
    Ok(Some(PluginStudent {
        username: user.username,
        display_name,
        email: Some(user.email).filter(|email| !email.is_empty()),
        groups: state.db.sign_in_groups(id).await?,
    }))
}

/// The name of cluster `id`, as plugins see it.
pub async fn cluster_name(state: &HubState, id: i64) -> Result<String, PluginFault> {
    Ok(state
        .db
        .clusters()
        .await?
        .into_iter()
        .find(|cluster| cluster.id == id)
        .map_or_else(|| id.to_string(), |cluster| cluster.name))
}
