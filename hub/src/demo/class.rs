//! The demo's class: made once, on the first start, by the demo's teacher, so a visitor sees
//! what a class looks like with a schedule, quota hours and idle shutdown set.

use anyhow::{Context, Result};

use crate::HubState;
use crate::domain::classes::{ClassRequest, EmptyVmSpec, create_class};
use crate::domain::idle::{IdleSettings, set_class_idle};
use crate::domain::quota::{QuotaSettings, set_class_quota};
use crate::domain::schedules::{NewRule, add_rule};
use crate::domain::viewer::Viewer;
use crate::vm_key::VmKey;

/// The demo class's name.
pub(super) const CLASS_NAME: &str = "Networks 101";

/// Makes the demo class unless the site has a class already.
pub(super) async fn seed(state: &HubState, teacher: &str, template: VmKey) -> Result<()> {
    if !state.db.list_classes(None).await?.is_empty() {
        return Ok(());
    }
    let row = state
        .db
        .user_by_name(teacher)
        .await?
        .context("the demo teacher is missing")?;
    let viewer = Viewer::from(&row);
    let request = ClassRequest {
        name: CLASS_NAME.into(),
        description: "Weekdays 08:00 to 16:00; 10 hours each outside those; idle VMs shut down."
            .into(),
        template: Some(template),
        seats: 2,
        node: None,
        cores: None,
        memory_mib: None,
        empty: EmptyVmSpec::default(),
        plugins: Vec::new(),
    };
    let (class_id, _job) = create_class(state, &viewer, &request).await?;
    let today = jiff::Zoned::now()
        .with_time_zone(
            crate::domain::schedules::calendar::parse_time_zone(&state.config.schedules.time_zone)
                .unwrap_or(jiff::tz::TimeZone::UTC),
        )
        .date()
        .to_string();
    let rule = NewRule {
        repeat: "weekly".into(),
        date: today,
        weekdays: ["mon", "tue", "wed", "thu", "fri"]
            .map(str::to_owned)
            .to_vec(),
        start: Some("08:00".into()),
        stop: Some("16:00".into()),
        note: Some("Lab hours".into()),
        ..NewRule::default()
    };
    add_rule(state, &viewer, class_id, &rule).await?;
    let quota = QuotaSettings {
        hours: Some(10),
        count_scheduled: false,
    };
    set_class_quota(state, &viewer, class_id, &quota).await?;
    let idle = IdleSettings {
        disconnected_minutes: Some(30),
        idle_guest_minutes: Some(60),
        ..IdleSettings::default()
    };
    set_class_idle(state, &viewer, class_id, &idle).await?;
    Ok(())
}
