//! A real OpenLDAP `slapd` (Debian's) for the directory sign-in tests, with a small school:
//! `ou=people` (tina, sam, and two people both answering to `twin`), `ou=groups` (teachers:
//! tina; pupils: sam) and a service account. It listens on `ldap://` (with StartTLS) and
//! `ldaps://`, with a certificate made for the test. Skipped with a notice where slapd is
//! missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::crash::free_addr;

pub const SUFFIX: &str = "dc=school,dc=test";
pub const SERVICE_DN: &str = "cn=proxlab,dc=school,dc=test";
pub const SERVICE_PASSWORD: &str = "service-password";

/// A running directory.
pub struct Slapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `ldap://127.0.0.1:PORT`
    pub ldap_url: String,
    /// `ldaps://127.0.0.1:PORT`
    pub ldaps_url: String,
}

fn data() -> String {
    let person = |uid: &str, name: &str, password: &str| {
        format!(
            "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {name}\n\
             sn: {name}\ndisplayName: {name}\nmail: {uid}@school.test\nuserPassword: {password}\n\n"
        )
    };
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: school\no: School\n\n\
         dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: proxlab\nuserPassword: {SERVICE_PASSWORD}\n\n"
    );
    ldif.push_str(&person("tina", "Tina Teacher", "tinas-password"));
    ldif.push_str(&person("sam", "Sam Student", "sams-password"));
    // Two entries that both answer to "twin" in the search filter below.
    ldif.push_str(&format!(
        "dn: cn=Twin One,ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\ncn: Twin One\nsn: One\n\
         uid: twin\nuserPassword: twins-password\n\n\
         dn: cn=Twin Two,ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\ncn: Twin Two\nsn: Two\n\
         uid: twin\nuserPassword: twins-password\n\n"
    ));
    ldif.push_str(&format!(
        "dn: cn=teachers,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: teachers\n\
         member: uid=tina,ou=people,{SUFFIX}\n\n\
         dn: cn=pupils,ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: pupils\n\
         member: uid=sam,ou=people,{SUFFIX}\n\n"
    ));
    ldif
}

fn config(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/nis.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         pidfile {dir}/slapd.pid\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         TLSCertificateFile {dir}/cert.pem\n\
         TLSCertificateKeyFile {dir}/key.pem\n\
         database mdb\n\
         suffix \"{SUFFIX}\"\n\
         rootdn \"cn=admin,{SUFFIX}\"\n\
         directory {dir}/db\n\
         access to attrs=userPassword by anonymous auth by self read by * none\n\
         access to * by * read\n"
    )
}

impl Slapd {
    /// A directory with the school's entries, or `None` (with a notice) without slapd.
    pub async fn start() -> Option<Self> {
        if !Path::new("/usr/sbin/slapd").exists() {
            eprintln!("NOTICE: slapd is not installed; the LDAP sign-in tests are skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let certificate =
            proxlab_link::pki::self_signed_web_cert(&["127.0.0.1".into(), "localhost".into()])
                .unwrap();
        std::fs::write(dir.path().join("cert.pem"), &certificate.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &certificate.key_pem).unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(dir.path().join("slapd.conf"), config(dir.path())).unwrap();
        std::fs::write(dir.path().join("school.ldif"), data()).unwrap();
        let loaded = std::process::Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(dir.path().join("school.ldif"))
            .output()
            .unwrap();
        assert!(
            loaded.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        let ldap_url = format!("ldap://{}", free_addr());
        let ldaps_url = format!("ldaps://{}", free_addr());
        let mut slapd = Self {
            child: None,
            dir,
            ldap_url,
            ldaps_url,
        };
        slapd.run().await;
        Some(slapd)
    }

    /// The CA file that trusts the directory's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    async fn run(&mut self) {
        let mut child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("{}/ {}/", self.ldap_url, self.ldaps_url))
            // In the foreground, logging connections and operations (256, "stats"): it
            // says "slapd starting" once it listens.
            .args(["-d", "256"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("slapd starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        super::within("slapd starting", async {
            loop {
                match lines.next_line().await.unwrap() {
                    Some(line) if line.contains("slapd starting") => break,
                    Some(_) => {}
                    None => panic!("slapd exited before it started"),
                }
            }
        })
        .await;
        // Its log must keep flowing, or slapd blocks writing it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// Stops the directory.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}
