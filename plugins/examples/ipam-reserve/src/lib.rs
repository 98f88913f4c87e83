//! Gives each new VM a static address reserved in NetBox, and releases it when the VM is
//! deleted. The address goes into cloud-init (`ipconfig0`); what NetBox calls the address
//! (its id) is kept in the plugin's store under the VM's id, for the release.
//!
//! Settings: `netbox_url` and `token` (site-wide), `prefix_id` and `gateway` (per class).
//! Capabilities: `http` (the node operator lists NetBox's host) and `store`.

use proxlab_plugin_sdk::{ConfigEdit, Facts, HttpResponse, before_delete, configure, http, store};
use serde_json::{Value, json};

struct IpamReserve;

fn required<'a>(facts: &'a Facts, name: &str) -> Result<&'a str, String> {
    facts
        .text(name)
        .filter(|text| !text.is_empty())
        .ok_or_else(|| format!("the setting `{name}` is not set"))
}

fn call(
    facts: &Facts,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<HttpResponse, String> {
    let url = format!(
        "{}{path}",
        required(facts, "netbox_url")?.trim_end_matches('/')
    );
    let headers = vec![
        (
            "authorization".to_owned(),
            format!("Token {}", required(facts, "token")?),
        ),
        ("content-type".to_owned(), "application/json".to_owned()),
        ("accept".to_owned(), "application/json".to_owned()),
    ];
    let body = body.map(|body| body.to_string().into_bytes());
    http::request(method, &url, &headers, body.as_deref())
}

/// Where the VM's reservation is remembered.
fn key(facts: &Facts) -> String {
    format!("{}/{}", facts.vm.cluster, facts.vm.vmid)
}

impl configure::Guest for IpamReserve {
    fn configure(facts: Facts) -> Result<Vec<ConfigEdit>, String> {
        let prefix = facts
            .integer("prefix_id")
            .ok_or("the setting `prefix_id` is not set")?;
        let gateway = required(&facts, "gateway")?;
        let request = json!({
            "dns_name": facts.vm.name,
            "description": format!("proxlab class {} VM {}", facts.class.id, facts.vm.vmid),
        });
        let path = format!("/api/ipam/prefixes/{prefix}/available-ips/");
        let response = call(&facts, "POST", &path, Some(request))?;
        if response.status != 201 {
            return Err(format!(
                "NetBox answered {} to the reservation: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ));
        }
        let reserved: Value = serde_json::from_slice(&response.body)
            .map_err(|err| format!("NetBox's answer is not JSON: {err}"))?;
        let (Some(id), Some(address)) = (reserved["id"].as_i64(), reserved["address"].as_str())
        else {
            return Err(format!("NetBox's answer has no id and address: {reserved}"));
        };
        store::set(&key(&facts), &id.to_string())?;
        Ok(vec![
            ConfigEdit::Set(("ipconfig0".into(), format!("ip={address},gw={gateway}"))),
            ConfigEdit::Describe(format!("Address: {address} (NetBox #{id})\n")),
        ])
    }
}

impl before_delete::Guest for IpamReserve {
    fn before_delete(facts: Facts) -> Result<(), String> {
        let key = key(&facts);
        let Some(id) = store::get(&key) else {
            return Ok(());
        };
        let response = call(
            &facts,
            "DELETE",
            &format!("/api/ipam/ip-addresses/{id}/"),
            None,
        )?;
        // Gone already is as good as released.
        if response.status != 204 && response.status != 404 {
            return Err(format!(
                "NetBox answered {} to releasing #{id}",
                response.status
            ));
        }
        store::delete(&key);
        Ok(())
    }
}

configure::export!(IpamReserve);
before_delete::export!(IpamReserve);
