//! The authorization matrix of a class and its VMs: every API route that names a class or a
//! VM, asked by everyone who could ask it (an admin, the class's owner, an assistant who is
//! a student and one who is a teacher, another teacher, the class's student and a student
//! from elsewhere), on a real lab. Each cell is allowed (the route does its work or refuses
//! the request on its merits) or denied: `403` for an assistant reaching for an owner's
//! route (they see the class), `404` for everyone who may not know the class or VM exists.

mod common;

use common::lab::Lab;
use common::web::WebClient;
use proxlab_hub::db::users::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Admin,
    Owner,
    StudentAssistant,
    TeacherAssistant,
    OtherTeacher,
    ClassStudent,
    Outsider,
}

const EVERYONE: [Who; 7] = [
    Who::Admin,
    Who::Owner,
    Who::StudentAssistant,
    Who::TeacherAssistant,
    Who::OtherTeacher,
    Who::ClassStudent,
    Who::Outsider,
];

/// What a cell must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Allowed,
    /// Seen but not theirs to change: 403.
    Forbidden,
    /// Not theirs to know of: 404.
    Hidden,
}

/// Who may do what: the rules of `domain::access` and the class's standing, as a table.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Admins and owners; assistants are refused; everyone else is told it does not exist.
    OwnersOnly,
    /// Admins, owners and assistants.
    ClassStaff,
    /// Admins, owners, assistants and the VM's own student.
    VmUsers,
    /// Admins and owners hand VMs on; assistants and the student see the VM but may not.
    VmManagers,
}

fn expected(rule: Rule, who: Who) -> Cell {
    use Who::*;
    let assistant = matches!(who, StudentAssistant | TeacherAssistant);
    match rule {
        Rule::OwnersOnly => match who {
            Admin | Owner => Cell::Allowed,
            _ if assistant => Cell::Forbidden,
            _ => Cell::Hidden,
        },
        Rule::ClassStaff => match who {
            Admin | Owner => Cell::Allowed,
            _ if assistant => Cell::Allowed,
            _ => Cell::Hidden,
        },
        Rule::VmUsers => match who {
            Admin | Owner | ClassStudent => Cell::Allowed,
            _ if assistant => Cell::Allowed,
            _ => Cell::Hidden,
        },
        Rule::VmManagers => match who {
            Admin | Owner => Cell::Allowed,
            TeacherAssistant => Cell::Forbidden,
            // Assigning is for staff: to a student the route does not exist.
            _ => Cell::Hidden,
        },
    }
}

fn observed(status: StatusCode) -> Cell {
    match status {
        StatusCode::FORBIDDEN => Cell::Forbidden,
        StatusCode::NOT_FOUND => Cell::Hidden,
        _ => Cell::Allowed,
    }
}

/// One route as asked: method, path, body, and whether an allowed ask would change the
/// lab for the cells after it (those run for the denied cells only; the routes' own tests
/// cover their work).
struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    rule: Rule,
    destructive: bool,
}

fn route(method: Method, path: String, body: Option<Value>, rule: Rule) -> Route {
    Route {
        method,
        path,
        body,
        rule,
        destructive: false,
    }
}

fn destructive(method: Method, path: String, body: Option<Value>, rule: Rule) -> Route {
    Route {
        destructive: true,
        ..route(method, path, body, rule)
    }
}

async fn ask(client: &WebClient, route: &Route) -> StatusCode {
    let mut request = client.client.request(
        route.method.clone(),
        format!("{}{}", client.base, route.path),
    );
    if let Some(token) = &client.bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = &route.body {
        request = request.json(body);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn every_class_and_vm_route_for_everyone_who_could_ask() {
    let lab = Lab::start().await;
    let admin = lab.user("root", Role::Admin).await;
    let owner = lab.user("owen", Role::Teacher).await;
    let student_assistant = lab.user("stella", Role::Student).await;
    let teacher_assistant = lab.user("tara", Role::Teacher).await;
    let other_teacher = lab.user("otto", Role::Teacher).await;
    let class_student = lab.user("cleo", Role::Student).await;
    let outsider = lab.user("oscar", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&owner, "Matrix", 1).await;
    let deployed = owner.json(&format!("/api/v1/classes/{class_id}")).await;
    let vm = deployed["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["kind"] == "student")
        .map(|vm| vm["id"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("a student VM: {deployed}"));
    for (client, username) in [(&owner, "stella"), (&owner, "tara")] {
        let answer = client
            .api_post_json(
                &format!("/api/v1/classes/{class_id}/assistants"),
                &json!({ "username": username }),
            )
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let answer = owner
        .api_post_json(
            &format!("/api/v1/vms/{vm}/assign"),
            &json!({ "username": "cleo" }),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let detail = owner.json(&format!("/api/v1/classes/{class_id}")).await;
    let job = detail["jobs"][0]["id"].as_i64().unwrap();
    let task: Value = owner
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/bulk/start"),
            &json!({ "all": true }),
        )
        .await
        .json()
        .await
        .unwrap();
    let task = task["id"].as_i64().unwrap_or_else(|| panic!("{task}"));

    let class = format!("/api/v1/classes/{class_id}");
    let vm_path = format!("/api/v1/vms/{vm}");
    let rollout = json!({ "rollout": "new-students" });
    let routes = vec![
        route(Method::GET, class.clone(), None, Rule::ClassStaff),
        route(
            Method::GET,
            format!("{class}/tasks/{task}"),
            None,
            Rule::ClassStaff,
        ),
        route(
            Method::GET,
            format!("/api/v1/jobs/{job}"),
            None,
            Rule::ClassStaff,
        ),
        route(
            Method::POST,
            format!("{class}/bulk/start"),
            Some(json!({ "all": true })),
            Rule::ClassStaff,
        ),
        route(Method::GET, format!("{class}/idle"), None, Rule::OwnersOnly),
        route(
            Method::GET,
            format!("{class}/quota"),
            None,
            Rule::OwnersOnly,
        ),
        route(
            Method::GET,
            format!("{class}/access"),
            None,
            Rule::OwnersOnly,
        ),
        route(
            Method::GET,
            format!("{class}/schedule"),
            None,
            Rule::OwnersOnly,
        ),
        route(
            Method::GET,
            format!("{class}/hardware"),
            None,
            Rule::OwnersOnly,
        ),
        route(
            Method::GET,
            format!("{class}/versions"),
            None,
            Rule::OwnersOnly,
        ),
        route(
            Method::GET,
            format!("{class}/usage"),
            None,
            Rule::OwnersOnly,
        ),
        destructive(Method::DELETE, class.clone(), None, Rule::OwnersOnly),
        destructive(
            Method::POST,
            format!("{class}/capacity"),
            Some(json!({ "add": 1 })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/invite"),
            Some(json!({ "expires_in_days": 1 })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/owners"),
            Some(json!({ "username": "otto" })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::DELETE,
            format!("{class}/owners/owen"),
            None,
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/assistants"),
            Some(json!({ "username": "oscar" })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::DELETE,
            format!("{class}/assistants/tara"),
            None,
            Rule::OwnersOnly,
        ),
        destructive(
            Method::DELETE,
            format!("{class}/students/cleo"),
            None,
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/remove-vms"),
            Some(json!({ "vmids": [vm] })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::PUT,
            format!("{class}/plugins"),
            Some(json!({ "plugins": [] })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::PUT,
            format!("{class}/idle"),
            Some(json!({ "no_connection_minutes": 30 })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::PUT,
            format!("{class}/quota"),
            Some(json!({ "hours": 10 })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/quota/hours"),
            Some(json!({ "hours": 1 })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::PUT,
            format!("{class}/access"),
            Some(
                json!({ "console": true, "ssh": false, "rdp": false, "ssh_port": 22, "rdp_port": 3389 }),
            ),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/schedule/rules"),
            Some(json!({ "repeat": "once", "date": "2030-01-07", "start": "08:00" })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::DELETE,
            format!("{class}/schedule/rules/1"),
            None,
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/hardware"),
            Some(json!({ "cores": 2 })),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/versions"),
            Some(rollout.clone()),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/versions/1/rollback"),
            Some(rollout),
            Rule::OwnersOnly,
        ),
        destructive(
            Method::POST,
            format!("{class}/versions/keep"),
            Some(json!({ "keep": 3 })),
            Rule::OwnersOnly,
        ),
        route(Method::GET, vm_path.clone(), None, Rule::VmUsers),
        route(
            Method::POST,
            format!("{vm_path}/start"),
            None,
            Rule::VmUsers,
        ),
        route(
            Method::POST,
            format!("{vm_path}/console"),
            Some(json!({ "kind": "vnc" })),
            Rule::VmUsers,
        ),
        route(
            Method::GET,
            format!("{vm_path}/forwards"),
            None,
            Rule::VmUsers,
        ),
        route(
            Method::POST,
            format!("{vm_path}/still-here"),
            None,
            Rule::VmUsers,
        ),
        destructive(Method::POST, format!("{vm_path}/stop"), None, Rule::VmUsers),
        destructive(
            Method::POST,
            format!("{vm_path}/reset"),
            None,
            Rule::VmUsers,
        ),
        destructive(
            Method::POST,
            format!("{vm_path}/assign"),
            Some(json!({ "username": "oscar" })),
            Rule::VmManagers,
        ),
        destructive(
            Method::POST,
            format!("{vm_path}/unassign"),
            None,
            Rule::VmManagers,
        ),
    ];

    let clients = [
        (Who::Admin, &admin),
        (Who::Owner, &owner),
        (Who::StudentAssistant, &student_assistant),
        (Who::TeacherAssistant, &teacher_assistant),
        (Who::OtherTeacher, &other_teacher),
        (Who::ClassStudent, &class_student),
        (Who::Outsider, &outsider),
    ];
    assert_eq!(clients.len(), EVERYONE.len());
    let mut wrong = Vec::new();
    let mut asked = 0;
    for route in &routes {
        for (who, client) in clients {
            let want = expected(route.rule, who);
            if route.destructive && want == Cell::Allowed {
                continue;
            }
            asked += 1;
            let status = ask(client, route).await;
            if observed(status) != want {
                wrong.push(format!(
                    "{} {} as {who:?}: {status}, wanted {want:?}",
                    route.method, route.path
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {asked} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Nothing a denied ask touched changed: the class, its people and its VM are as they were.
    let after = owner.json(&class).await;
    assert_eq!(after["owners"], json!(["owen"]));
    assert_eq!(after["assistants"], json!(["stella", "tara"]));
    assert_eq!(after["students"][0]["username"], "cleo");
    assert_eq!(after["class"]["seats"], detail["class"]["seats"]);
    assert_eq!(after["standing"], "owner");
    let assisted = student_assistant.json(&class).await;
    assert_eq!(assisted["standing"], "assistant");
    assert_eq!(
        assisted["invite_path"],
        Value::Null,
        "assistants do not get the invite"
    );
}

#[tokio::test]
async fn an_assistant_sees_the_class_page_without_its_controls() {
    let lab = Lab::start().await;
    let owner = lab.user("owen", Role::Teacher).await;
    lab.user("stella", Role::Student).await;
    let (class_id, _) = lab.deployed_class(&owner, "Pages", 1).await;
    let answer = owner
        .api_post_json(
            &format!("/api/v1/classes/{class_id}/assistants"),
            &json!({ "username": "stella" }),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let stella = WebClient::login(&lab.hub.url(), "stella", "a-long-password").await;
    let list = stella.get("/classes").await.text().await.unwrap();
    assert!(
        list.contains(&format!("href=\"/classes/{class_id}\"")),
        "{list}"
    );
    let response = stella.get(&format!("/classes/{class_id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("Assistants") && page.contains("stella"));
    assert!(
        page.contains("/bulk/start"),
        "assistants start the class's VMs"
    );
    for control in [
        "/delete",
        "/invite",
        "/capacity",
        "/remove-vms",
        "/owners\"",
        "id=\"schedule\"",
    ] {
        assert!(!page.contains(control), "an assistant's page has {control}");
    }
    let owner_page = WebClient::login(&lab.hub.url(), "owen", "a-long-password")
        .await
        .get(&format!("/classes/{class_id}"))
        .await
        .text()
        .await
        .unwrap();
    for control in ["/delete", "/invite", "/capacity", "/assistants\""] {
        assert!(
            owner_page.contains(control),
            "the owner's page lacks {control}"
        );
    }
}

/// One form of a page, as a browser would submit it with its defaults.
#[derive(Debug)]
struct PageForm {
    action: String,
    fields: Vec<(String, String)>,
}

/// The value of attribute `name` in a tag's text.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let at = tag.find(&marker)? + marker.len();
    let end = tag[at..].find('"')? + at;
    Some(tag[at..end].replace("&#x2F;", "/").replace("&amp;", "&"))
}

/// What a browser sends for an input left as the page gave it; empty required fields get a
/// plausible value, so that the request reaches the handler's checks.
fn default_value(tag: &str) -> Option<String> {
    let kind = attribute(tag, "type").unwrap_or_else(|| "text".into());
    match kind.as_str() {
        "checkbox" | "radio" => tag
            .contains(" checked")
            .then(|| attribute(tag, "value").unwrap_or_else(|| "on".into())),
        "submit" | "button" | "file" => None,
        _ => Some(
            match attribute(tag, "value").filter(|value| !value.is_empty()) {
                Some(value) => value,
                None => match kind.as_str() {
                    "number" => attribute(tag, "min").unwrap_or_else(|| "1".into()),
                    "date" => "2030-01-07".into(),
                    "time" => "08:00".into(),
                    _ => "x".into(),
                },
            },
        ),
    }
}

/// Every form on a page that posts somewhere, one per submit target (a button's
/// `formaction` makes its own), with the fields it would send.
fn page_forms(html: &str) -> Vec<PageForm> {
    let mut forms = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<form") {
        let end = rest[start..]
            .find("</form>")
            .map_or(rest.len(), |end| start + end);
        let form = &rest[start..end];
        let open_tag = &form[..form.find('>').unwrap_or(form.len())];
        rest = &rest[end..];
        if attribute(open_tag, "method").as_deref() != Some("post")
            || open_tag.contains("multipart/form-data")
        {
            continue;
        }
        let mut fields = Vec::new();
        let mut targets: Vec<String> = attribute(open_tag, "action").into_iter().collect();
        for (at, _) in form.match_indices('<') {
            let tag = &form[at..at + form[at..].find('>').unwrap_or(0)];
            if tag.starts_with("<input") || tag.starts_with("<textarea") {
                if let (Some(name), Some(value)) = (attribute(tag, "name"), default_value(tag)) {
                    fields.push((name, value));
                }
            } else if tag.starts_with("<select") {
                let select = &form[at..];
                let body = &select[..select.find("</select>").unwrap_or(select.len())];
                let chosen = body
                    .split("<option")
                    .skip(1)
                    .find(|option| option.contains(" selected"))
                    .or_else(|| body.split("<option").nth(1));
                let value = chosen.map(|option| {
                    attribute(option, "value").unwrap_or_else(|| {
                        let text = &option[option.find('>').map_or(0, |at| at + 1)..];
                        text[..text.find('<').unwrap_or(text.len())]
                            .trim()
                            .to_owned()
                    })
                });
                if let (Some(name), Some(value)) = (attribute(tag, "name"), value) {
                    fields.push((name, value));
                }
            } else if tag.starts_with("<button")
                && let Some(target) = attribute(tag, "formaction")
            {
                targets.push(target);
            }
        }
        for action in targets {
            forms.push(PageForm {
                action,
                fields: fields.clone(),
            });
        }
    }
    forms
}

/// How a page answered: denied with 403 or 404, or back to the page with an error saying so.
async fn page_cell(response: reqwest::Response) -> Cell {
    let status = response.status();
    let flash = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|cookie| cookie.starts_with("proxlab_flash="))
        .map(|cookie| {
            let value = cookie["proxlab_flash=".len()..]
                .split(';')
                .next()
                .unwrap_or_default();
            form_urlencoded::parse(format!("x={value}").as_bytes())
                .next()
                .map(|(_, text)| text.into_owned())
                .unwrap_or_default()
                .to_lowercase()
        })
        .unwrap_or_default();
    match status {
        StatusCode::FORBIDDEN => Cell::Forbidden,
        StatusCode::NOT_FOUND => Cell::Hidden,
        _ if flash.starts_with("error:") && flash.contains("not allowed") => Cell::Forbidden,
        _ if flash.starts_with("error:")
            && (flash.contains("no such") || flash.contains("not found")) =>
        {
            Cell::Hidden
        }
        _ => Cell::Allowed,
    }
}

#[tokio::test]
async fn every_form_of_the_class_page_for_everyone_who_is_not_its_owner() {
    let lab = Lab::start().await;
    let owner_api = lab.user("owen", Role::Teacher).await;
    for (name, role) in [
        ("stella", Role::Student),
        ("tara", Role::Teacher),
        ("otto", Role::Teacher),
        ("cleo", Role::Student),
        ("oscar", Role::Student),
    ] {
        lab.user(name, role).await;
    }
    let (class_id, _) = lab.deployed_class(&owner_api, "Forms", 1).await;
    for username in ["stella", "tara"] {
        let answer = owner_api
            .api_post_json(
                &format!("/api/v1/classes/{class_id}/assistants"),
                &json!({ "username": username }),
            )
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let detail = owner_api.json(&format!("/api/v1/classes/{class_id}")).await;
    let vm = detail["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["kind"] == "student")
        .map(|vm| vm["id"].as_str().unwrap().to_owned())
        .unwrap();
    let answer = owner_api
        .api_post_json(
            &format!("/api/v1/vms/{vm}/assign"),
            &json!({ "username": "cleo" }),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let before = owner_api.json(&format!("/api/v1/classes/{class_id}")).await;

    let base = lab.hub.url();
    let owner = WebClient::login(&base, "owen", "a-long-password").await;
    let page = owner
        .get(&format!("/classes/{class_id}"))
        .await
        .text()
        .await
        .unwrap();
    let forms: Vec<PageForm> = page_forms(&page)
        .into_iter()
        .filter(|form| form.action.starts_with("/classes/") || form.action.starts_with("/vms/"))
        .collect();
    assert!(
        forms.len() >= 20,
        "the owner's page has its forms: {forms:?}"
    );

    let mut wrong = Vec::new();
    let mut asked = 0;
    for (who, name) in [
        (Who::StudentAssistant, "stella"),
        (Who::TeacherAssistant, "tara"),
        (Who::OtherTeacher, "otto"),
        (Who::ClassStudent, "cleo"),
        (Who::Outsider, "oscar"),
    ] {
        let client = WebClient::login(&base, name, "a-long-password").await;
        let class_page = client.get(&format!("/classes/{class_id}")).await.status();
        let want = expected(Rule::ClassStaff, who);
        if observed(class_page) != want {
            wrong.push(format!(
                "GET /classes/{class_id} as {who:?}: {class_page}, wanted {want:?}"
            ));
        }
        for form in &forms {
            let rule = if form.action.contains("/bulk/") {
                Rule::ClassStaff
            } else if form.action.starts_with("/vms/") {
                Rule::VmManagers
            } else {
                Rule::OwnersOnly
            };
            let want = expected(rule, who);
            let fields: Vec<(&str, &str)> = form
                .fields
                .iter()
                .filter(|(name, _)| name != "csrf")
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            asked += 1;
            let got = page_cell(client.post_form(&form.action, &fields).await).await;
            if got != want {
                wrong.push(format!(
                    "POST {} as {who:?}: {got:?}, wanted {want:?}",
                    form.action
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {asked} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The bulk actions the assistants ran are the only change.
    let after = owner_api.json(&format!("/api/v1/classes/{class_id}")).await;
    for field in ["class", "owners", "assistants", "students", "invite_path"] {
        assert_eq!(after[field], before[field], "{field} changed");
    }
}
