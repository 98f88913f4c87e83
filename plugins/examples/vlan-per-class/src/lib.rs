//! Puts each class on its own VLAN: every NIC of a class's VMs gets the VLAN tag
//! `100 + class id` (wrapping within 100..=3999), and the VM is tagged `vlan-<tag>`.

use proxlab_plugin_sdk::v0_1::configure::{ClassInfo, ConfigEdit, Guest, Level, VmInfo, log};

struct VlanPerClass;

const FIRST_TAG: i64 = 100;
const LAST_TAG: i64 = 3999;

fn vlan_for(class_id: i64) -> i64 {
    FIRST_TAG + class_id.rem_euclid(LAST_TAG - FIRST_TAG + 1)
}

/// `virtio=AA:..,bridge=vmbr0,tag=5` with its `tag` replaced.
fn with_tag(net: &str, tag: i64) -> String {
    let mut parts: Vec<String> = net
        .split(',')
        .filter(|part| !part.starts_with("tag="))
        .map(str::to_owned)
        .collect();
    parts.push(format!("tag={tag}"));
    parts.join(",")
}

impl Guest for VlanPerClass {
    fn configure(
        class: ClassInfo,
        vm: VmInfo,
        config: Vec<(String, String)>,
    ) -> Result<Vec<ConfigEdit>, String> {
        let tag = vlan_for(class.id);
        let mut edits: Vec<ConfigEdit> = config
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix("net")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|(key, value)| ConfigEdit::Set((key.clone(), with_tag(value, tag))))
            .collect();
        if edits.is_empty() {
            return Err(format!("VM {} has no network interface", vm.vmid));
        }
        let tags = config
            .iter()
            .find(|(key, _)| key == "tags")
            .map(|(_, value)| format!("{value};vlan-{tag}"))
            .unwrap_or_else(|| format!("vlan-{tag}"));
        edits.push(ConfigEdit::Set(("tags".into(), tags)));
        log(Level::Info, &format!("VM {} on VLAN {tag}", vm.vmid));
        Ok(edits)
    }
}

proxlab_plugin_sdk::v0_1::configure::export!(VlanPerClass);
