//! Contract 0.2.0 with the real example plugins (built by `plugins/build`; without them these
//! tests skip with a notice): settings, facts, the hooks of a VM's whole life through the
//! agent's registry, composing descriptions, and the `http` and `store` capabilities against
//! a small NetBox-like HTTP server on loopback.

#[path = "support/plugin_dist.rs"]
mod plugin_dist;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use proxlab_agent::plugins::grants::Grant;
use proxlab_agent::plugins::manifest::SettingValue;
use proxlab_agent::plugins::{
    Capability, Hook, NodeFacts, PluginHost, PluginRegistry, PluginSettings,
};
use proxlab_protocol::plugins::{PluginClass, PluginSite, PluginSteps, PluginStudent, PluginVm};
use proxlab_pve::config::VmConfig;
use proxlab_pve::policy::NodeLimits;

const VMID: u32 = 2301;
const LIMITS: NodeLimits = NodeLimits {
    cpus: 16,
    memory_mib: 65_536,
};

fn dist() -> Option<PathBuf> {
    plugin_dist::dist("describe-student")
}

/// A registry with the operator's drop-in `plugins` (copied from `dist`) and `grants`.
fn registry(
    dist: &Path,
    state: &Path,
    plugins: &[&str],
    grants: BTreeMap<String, Grant>,
) -> PluginRegistry {
    let dir = state.join("drop-in");
    for plugin in plugins {
        std::fs::create_dir_all(dir.join(plugin)).unwrap();
        for file in ["plugin.toml", "plugin.wasm"] {
            std::fs::copy(dist.join(plugin).join(file), dir.join(plugin).join(file)).unwrap();
        }
    }
    let settings = PluginSettings {
        dir,
        grants,
        ..PluginSettings::default()
    };
    let facts = NodeFacts {
        node: "pve1".into(),
        agent_version: "test".into(),
    };
    let host = PluginHost::new(settings, facts, None)
        .unwrap()
        .with_store_dir(&state.join("plugin-data"));
    PluginRegistry::start(host, state)
}

/// One student VM's steps with `plugins` and their settings.
fn steps(plugins: &[&str], settings: &[(&str, &str, SettingValue)]) -> PluginSteps {
    let mut values: BTreeMap<String, BTreeMap<String, SettingValue>> = BTreeMap::new();
    for (plugin, name, value) in settings {
        values
            .entry((*plugin).to_owned())
            .or_default()
            .insert((*name).to_owned(), value.clone());
    }
    PluginSteps {
        plugins: plugins.iter().map(|p| (*p).to_owned()).collect(),
        class: PluginClass {
            id: 7,
            name: "Networking 101".into(),
            slug: "networking-101".into(),
            owners: vec!["tina".into()],
            seats: 20,
            ..PluginClass::default()
        },
        vms: BTreeMap::from([(
            VMID,
            PluginVm {
                kind: "student".into(),
                index: 1,
                ..PluginVm::default()
            },
        )]),
        cluster: "lab".into(),
        site: PluginSite {
            hub_url: "https://lab.school.example".into(),
        },
        settings: values,
    }
}

fn new_vm() -> VmConfig {
    VmConfig::parse(
        "#Made by hand\ncores: 2\nmemory: 2048\nname: networking-101-1\n\
         net0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nscsi0: local:2301/vm-2301-disk-0.qcow2,size=8G\n",
    )
}

fn text(value: &str) -> SettingValue {
    SettingValue::Text(value.into())
}

#[test]
fn describe_student_keeps_its_section_up_to_date_across_assignments() {
    let Some(dist) = dist() else { return };
    let state = tempfile::tempdir().unwrap();
    let registry = registry(&dist, state.path(), &["describe-student"], BTreeMap::new());
    let steps = steps(
        &["describe-student"],
        &[("describe-student", "contact", text("Room 12"))],
    );
    let mut config = new_vm();
    registry
        .prepare(&steps, VMID, &mut config, &LIMITS)
        .unwrap();
    registry.remember(&steps, VMID, "networking-101-1").unwrap();
    let made = config.main().description().unwrap();
    assert!(made.starts_with("Made by hand\n"), "{made}");
    assert!(
        made.contains("Not given to a student yet\nHelp: Room 12"),
        "{made}"
    );

    let ada = PluginStudent {
        username: "ada".into(),
        display_name: "Ada Lovelace".into(),
        email: Some("ada@school.example".into()),
        groups: Vec::new(),
    };
    let assigned = registry
        .assignment(VMID, Some(&ada), &config, &LIMITS)
        .unwrap()
        .expect("the description changes");
    let described = assigned.main().description().unwrap();
    assert!(described.starts_with("Made by hand\n"), "{described}");
    assert!(
        described.contains("Student: Ada Lovelace (ada)\nEmail: ada@school.example"),
        "{described}"
    );
    assert_eq!(
        described
            .matches("<!-- proxlab:describe-student -->")
            .count(),
        1
    );
    assert!(!described.contains("Not given"), "{described}");

    let bo = PluginStudent {
        username: "bo".into(),
        display_name: "Bo Chen".into(),
        ..PluginStudent::default()
    };
    let reassigned = registry
        .assignment(VMID, Some(&bo), &assigned, &LIMITS)
        .unwrap()
        .unwrap();
    let described = reassigned.main().description().unwrap();
    assert!(described.contains("Student: Bo Chen (bo)") && !described.contains("Ada"));

    let unassigned = registry
        .assignment(VMID, None, &reassigned, &LIMITS)
        .unwrap()
        .unwrap();
    let described = unassigned.main().description().unwrap();
    assert!(described.contains("Not given to a student yet") && !described.contains("Bo"));
    // A VM no plugin made is left alone.
    assert!(
        registry
            .assignment(9999, None, &unassigned, &LIMITS)
            .unwrap()
            .is_none()
    );
}

#[test]
fn per_class_sizing_follows_the_class_within_the_sites_cap() {
    let Some(dist) = dist() else { return };
    let state = tempfile::tempdir().unwrap();
    let plugin = "per-class-sizing";
    let registry = registry(&dist, state.path(), &[plugin], BTreeMap::new());
    let run = |settings: &[(&str, &str, SettingValue)]| {
        let mut config = new_vm();
        let steps = steps(&[plugin], settings);
        registry
            .prepare(&steps, VMID, &mut config, &LIMITS)
            .map(|findings| (config, findings))
    };
    // The hub sends resolved settings: the manifest's defaults included.
    let cap = (plugin, "max_memory_mib", SettingValue::Integer(16_384));
    let (config, findings) = run(&[
        (plugin, "cores", SettingValue::Integer(4)),
        (plugin, "memory_mib", SettingValue::Integer(8192)),
        cap.clone(),
    ])
    .unwrap();
    assert_eq!(config.main().get("cores"), Some("4"));
    assert_eq!(config.main().get("memory"), Some("8192"));
    assert!(findings.is_empty(), "{findings:?}");

    let err = run(&[
        (plugin, "memory_mib", SettingValue::Integer(32_768)),
        cap.clone(),
    ])
    .unwrap_err();
    assert!(
        err.contains("asks for 32768 MiB of memory per VM; this site allows at most 16384 MiB"),
        "{err}"
    );

    let (config, findings) = run(&[(plugin, "cores", SettingValue::Integer(-1)), cap]).unwrap();
    assert_eq!(config.main().get("cores"), Some("2"));
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].severity, "warning");
    assert_eq!(findings[0].plugin, plugin);
}

/// What the NetBox stand-in was asked: method, path, authorization, body.
type Requests = Arc<Mutex<Vec<(String, String, String, String)>>>;

/// A NetBox-like IPAM on loopback: `POST .../available-ips/` hands out 10.20.0.5/24 as #17,
/// `DELETE /api/ipam/ip-addresses/17/` releases it. Returns its `host:port`.
fn netbox() -> (String, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let requests: Requests = Arc::default();
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_owned();
            let path = parts.next().unwrap_or_default().to_owned();
            let (mut length, mut authorization) = (0, String::new());
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(": ").unwrap_or((header, ""));
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap(),
                    "authorization" => authorization = value.to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            let (status, answer) = match (method.as_str(), path.as_str()) {
                ("POST", "/api/ipam/prefixes/7/available-ips/") => {
                    ("201 Created", r#"{"id": 17, "address": "10.20.0.5/24"}"#)
                }
                ("DELETE", "/api/ipam/ip-addresses/17/") => ("204 No Content", ""),
                _ => ("404 Not Found", r#"{"detail": "Not found."}"#),
            };
            seen.lock()
                .unwrap()
                .push((method, path, authorization, body));
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (address, requests)
}

fn ipam_settings(address: &str) -> Vec<(&'static str, &'static str, SettingValue)> {
    let plugin = "ipam-reserve";
    vec![
        (plugin, "netbox_url", text(&format!("http://{address}"))),
        (plugin, "token", text("t0k3n")),
        (plugin, "prefix_id", SettingValue::Integer(7)),
        (plugin, "gateway", text("10.20.0.1")),
    ]
}

fn ipam_grant(hosts: &[&str]) -> BTreeMap<String, Grant> {
    BTreeMap::from([(
        "ipam-reserve".to_owned(),
        Grant {
            capabilities: vec![Capability::Http, Capability::Store],
            http_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            ..Grant::default()
        },
    )])
}

#[test]
fn ipam_reserve_reserves_an_address_and_releases_it_before_delete() {
    let Some(dist) = dist() else { return };
    let (address, requests) = netbox();
    let state = tempfile::tempdir().unwrap();
    let registry = registry(
        &dist,
        state.path(),
        &["describe-student", "ipam-reserve"],
        ipam_grant(&[&address]),
    );
    let mut settings = ipam_settings(&address);
    settings.push(("describe-student", "contact", text("Room 12")));
    let steps = steps(&["describe-student", "ipam-reserve"], &settings);
    let mut config = new_vm();
    registry
        .prepare(&steps, VMID, &mut config, &LIMITS)
        .unwrap();
    registry.remember(&steps, VMID, "networking-101-1").unwrap();
    assert_eq!(
        config.main().get("ipconfig0"),
        Some("ip=10.20.0.5/24,gw=10.20.0.1")
    );
    // Two plugins, two sections of one description.
    let description = config.main().description().unwrap();
    assert!(description.contains("Help: Room 12"), "{description}");
    assert!(
        description.contains("Address: 10.20.0.5/24 (NetBox #17)"),
        "{description}"
    );
    {
        let seen = requests.lock().unwrap();
        let (method, path, authorization, body) = &seen[0];
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("POST", "/api/ipam/prefixes/7/available-ips/")
        );
        assert_eq!(authorization, "Token t0k3n");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["dns_name"], "networking-101-1");
    }
    // The reservation is in the plugin's store, across a restart of the host.
    let store =
        std::fs::read_to_string(state.path().join("plugin-data/ipam-reserve.json")).unwrap();
    assert!(store.contains("\"lab/2301\":\"17\""), "{store}");

    let report = registry.run_hook(VMID, Hook::BeforeDelete, &config);
    assert_eq!(report.error, None);
    let seen = requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str()),
        ("DELETE", "/api/ipam/ip-addresses/17/")
    );
    let store =
        std::fs::read_to_string(state.path().join("plugin-data/ipam-reserve.json")).unwrap();
    assert!(!store.contains("lab/2301"), "{store}");
}

#[test]
fn http_and_store_need_the_operators_grant_and_reach_only_listed_hosts() {
    let Some(dist) = dist() else { return };
    let (address, requests) = netbox();
    let steps = steps(&["ipam-reserve"], &ipam_settings(&address));
    for (grants, expected) in [
        (
            BTreeMap::new(),
            "called http, which the operator has not granted it: there is no grant of http",
        ),
        (
            ipam_grant(&["netbox.school.example"]),
            &*format!("the node's operator has not listed {address}"),
        ),
    ] {
        let state = tempfile::tempdir().unwrap();
        let registry = registry(&dist, state.path(), &["ipam-reserve"], grants);
        let err = registry
            .prepare(&steps, VMID, &mut new_vm(), &LIMITS)
            .unwrap_err();
        assert!(err.contains(expected), "{err}");
    }
    assert!(requests.lock().unwrap().is_empty(), "no request was made");
}
