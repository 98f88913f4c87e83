//! A template built from an ISO end to end: a real hub, real agents, pve-sim nodes holding an
//! ISO image. A teacher makes the installer VM, it is theirs until they convert it, and a
//! class is then made from the template.

mod common;

use common::LAB_ISO_FILE;
use common::lab::Lab;
use common::web::WebClient;
use proxlab_hub::db::users::Role;
use proxlab_hub::vm_key::VmRef;
use proxlab_pve::config::VmConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn build(client: &WebClient, body: &Value) -> reqwest::Response {
    client.api_post_json("/api/v1/templates/builds", body).await
}

#[tokio::test]
async fn a_teacher_builds_a_template_from_an_iso_and_makes_a_class_of_it() {
    let lab = Lab::start().await;
    let teacher = lab.user("tina", Role::Teacher).await;
    let other = lab.user("otto", Role::Teacher).await;
    let alice = lab.user("alice", Role::Student).await;
    let iso = format!("local:iso/{LAB_ISO_FILE}");
    let page = WebClient::login(&lab.hub.url(), "tina", "a-long-password").await;
    let form = page.get("/templates/new").await.text().await.unwrap();
    // Tera escapes the slash in attributes; the browser sends it back as it was.
    let option = format!(r#"value="pve1|{}""#, iso.replace('/', "&#x2F;"));
    assert!(form.contains(&option), "{form}");

    let request = json!({
        "name": "lab-debian", "node": "pve1", "iso": iso, "storage": "local", "os": "linux",
        "cores": 1, "memory_mib": 512, "disk_gib": 1,
    });
    // Students build nothing; an ISO the node lacks is refused before anything is made.
    let refused = build(&alice, &request).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let mut absent = request.clone();
    absent["iso"] = json!("local:iso/absent.iso");
    let refused = build(&teacher, &absent).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("has no ISO image"));

    let made = build(&teacher, &request).await;
    assert_eq!(made.status(), StatusCode::CREATED);
    let vmid = made.json::<Value>().await.unwrap()["vmid"]
        .as_u64()
        .unwrap() as u32;
    let text = std::fs::read_to_string(lab.config_path("pve1", vmid)).unwrap();
    let config = VmConfig::parse_strict(&text, vmid).unwrap_or_else(|err| panic!("{err}:\n{text}"));
    assert_eq!(
        config.main().get("ide2"),
        Some(format!("{iso},media=cdrom").as_str())
    );
    assert_eq!(config.main().get("name"), Some("lab-debian"));

    // The VM is the builder's: they start it and reach its console; nobody else sees it.
    lab.inventory(&[vmid], true).await;
    lab.start_and_see_it_run(&teacher, vmid).await;
    let theirs = other.get(&format!("/api/v1/vms/{vmid}")).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    let templates = page.get("/templates").await.text().await.unwrap();
    assert!(
        templates.contains(&format!("/templates/builds/{}/convert", lab.key(vmid)))
            && templates.contains(&format!("/vms/{}/console", lab.key(vmid))),
        "{templates}"
    );
    let listed = teacher.json("/api/v1/templates/builds").await;
    assert_eq!(listed["builds"][0]["state"], "installing", "{listed}");
    assert!(
        other.json("/api/v1/templates/builds").await["builds"]
            .as_array()
            .unwrap()
            .is_empty(),
        "a teacher sees their own builds"
    );

    // Converting a running VM is refused; once it is shut down it works, without its ISO.
    let running = teacher
        .api_post(&format!("/api/v1/templates/builds/{vmid}/convert"))
        .await;
    assert_eq!(running.status(), StatusCode::CONFLICT);
    let stranger = other
        .api_post(&format!("/api/v1/templates/builds/{vmid}/convert"))
        .await;
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);
    let stopped = teacher.api_post(&format!("/api/v1/vms/{vmid}/stop")).await;
    assert_eq!(stopped.status(), StatusCode::OK);
    let converted = page
        .post_form(&format!("/templates/builds/{vmid}/convert"), &[])
        .await;
    assert_eq!(converted.status(), StatusCode::SEE_OTHER);
    let shown = page.get("/templates").await.text().await.unwrap();
    assert!(shown.contains("is a template now"), "{shown}");
    let text = std::fs::read_to_string(lab.config_path("pve1", vmid)).unwrap();
    let template = VmConfig::parse_strict(&text, vmid).unwrap();
    assert_eq!(template.main().get("template"), Some("1"));
    assert_eq!(template.main().get("ide2"), Some("none,media=cdrom"));
    assert_eq!(
        teacher.json("/api/v1/templates/builds").await["builds"][0]["state"],
        "template"
    );
    let actions: Vec<String> = lab
        .audit_by("tina")
        .await
        .into_iter()
        .map(|entry| entry.action)
        .collect();
    assert!(
        actions.contains(&"template.build".to_owned())
            && actions.contains(&"template.convert".to_owned()),
        "{actions:?}"
    );

    // A class is made from it like from any template.
    lab.vm_until(vmid, "it is a template", |vm| vm.template)
        .await;
    let (_, job) = lab
        .create_class(
            &teacher,
            &json!({"name": "Built", "template_vmid": vmid, "seats": 1}),
        )
        .await;
    assert_eq!(job["state"], "done", "{job}");

    // The page's form: a bad name is said on the form; a good one leads to the new VM.
    let source = format!("pve2|{iso}");
    let posted = page
        .post_form(
            "/templates/new",
            &[
                ("name", "no spaces allowed"),
                ("source", &source),
                ("storage", "local"),
                ("os", "windows11"),
            ],
        )
        .await;
    assert_eq!(posted.status(), StatusCode::SEE_OTHER);
    assert_eq!(posted.headers()["location"], "/templates/new");
    let said = page.get("/templates/new").await.text().await.unwrap();
    assert!(said.contains("The name"), "{said}");
    let posted = page
        .post_form(
            "/templates/new",
            &[
                ("name", "win11-lab"),
                ("source", &source),
                ("storage", "local"),
                ("os", "windows11"),
                ("cores", "1"),
                ("memory_mib", "1024"),
                ("disk_gib", ""),
            ],
        )
        .await;
    assert_eq!(posted.status(), StatusCode::SEE_OTHER);
    let location = posted.headers()["location"].to_str().unwrap().to_owned();
    let windows = match location.trim_start_matches("/vms/").parse().unwrap() {
        VmRef::Key(key) => {
            assert_eq!(key.cluster, lab.cluster, "{location}");
            key.vmid
        }
        VmRef::Vmid(_) => panic!("the new VM's address names its cluster: {location}"),
    };
    let text = std::fs::read_to_string(lab.config_path("pve2", windows)).unwrap();
    let config = VmConfig::parse_strict(&text, windows).unwrap();
    assert_eq!(config.main().get("bios"), Some("ovmf"));
    assert!(
        config.main().get("sata0").unwrap().contains("size=64G"),
        "the OS's default disk: {text}"
    );
}
