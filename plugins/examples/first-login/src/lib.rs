//! Gives each student a password of their own: after a VM's first start (and after each
//! reset to its template) it sets a new random password for the guest account `user`,
//! expires it so the student chooses their own at first sign-in, writes a welcome to
//! `/etc/motd`, and shows the password to the VM's student once, on the VM's page. The
//! password is in no log.
//!
//! The node's operator grants `guest-exec` for `chpasswd` and `passwd --expire *`, and
//! `guest-files` for `/etc/motd`.

use std::hash::{BuildHasher, RandomState};

use proxlab_plugin_sdk::{Facts, Notice, after_reset, after_start, guest};

struct FirstLogin;

/// How long a guest command may take.
const TIMEOUT_MS: u32 = 10_000;
/// Letters and digits that cannot be mistaken for one another.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// Twelve characters from the system's random source: each `RandomState` is keyed from it
/// (WASI's `random` here), so hashing with fresh ones gives unpredictable numbers.
fn password() -> String {
    (0..12u64)
        .map(|n| {
            let draw = RandomState::new().hash_one(n);
            ALPHABET[(draw % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

fn run(command: &str, args: &[&str], stdin: Option<String>) -> Result<(), String> {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let result = guest::exec(command, &args, stdin.as_deref(), TIMEOUT_MS)?;
    match (result.exit_code, result.stderr.trim()) {
        (0, _) => Ok(()),
        (code, "") => Err(format!("{command} exited with {code}")),
        (code, said) => Err(format!("{command} exited with {code}: {said}")),
    }
}

fn welcome(facts: &Facts) -> Result<Option<Notice>, String> {
    let Some(student) = &facts.student else {
        // A VM nobody has yet keeps the template's password.
        return Ok(None);
    };
    let user = facts.text("user").unwrap_or("student");
    let password = password();
    run("chpasswd", &[], Some(format!("{user}:{password}\n")))?;
    run("passwd", &["--expire", user], None)?;
    if facts.boolean("motd").unwrap_or(true) {
        let text = format!(
            "Welcome to {}, {}.\nThis VM is yours for the class; ask {} for help.\n",
            facts.class.name,
            student.display_name,
            facts.class.owners.join(" or ")
        );
        guest::write_file("/etc/motd", text.as_bytes())?;
    }
    Ok(Some(Notice {
        message: format!(
            "Sign in as {user} with the password below; you will choose your own at the first \
             sign-in."
        ),
        secret: Some(password),
    }))
}

impl after_start::Guest for FirstLogin {
    fn after_start(facts: Facts) -> Result<Option<Notice>, String> {
        welcome(&facts)
    }
}

impl after_reset::Guest for FirstLogin {
    fn after_reset(facts: Facts) -> Result<Option<Notice>, String> {
        welcome(&facts)
    }
}

after_start::export!(FirstLogin);
after_reset::export!(FirstLogin);
