//! After a student VM's first start, sets the password of the guest user `student` to the
//! student's username followed by the class id (`alice-42`), through the guest agent, and
//! expires it so the student must choose their own at first login. Needs `guest-exec`.

use proxlab_plugin_sdk::v0_1::after_start::{ClassInfo, Guest, Level, VmInfo, guest_exec, log};

struct SetGuestPassword;

const GUEST_USER: &str = "student";
const TIMEOUT_MS: u32 = 10_000;

fn run(vmid: u32, command: &str, args: &[&str], stdin: Option<String>) -> Result<(), String> {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let result = guest_exec(vmid, command, &args, stdin.as_deref(), TIMEOUT_MS)?;
    if result.exit_code != 0 {
        let said = result.stderr.trim();
        return Err(if said.is_empty() {
            format!("{command} exited with {}", result.exit_code)
        } else {
            format!("{command} exited with {}: {said}", result.exit_code)
        });
    }
    Ok(())
}

impl Guest for SetGuestPassword {
    fn after_start(class: ClassInfo, vm: VmInfo) -> Result<(), String> {
        let Some(student) = vm.student else {
            log(Level::Info, &format!("VM {} has no student yet", vm.vmid));
            return Ok(());
        };
        let password = format!("{student}-{}", class.id);
        run(
            vm.vmid,
            "chpasswd",
            &[],
            Some(format!("{GUEST_USER}:{password}\n")),
        )?;
        run(vm.vmid, "passwd", &["--expire", GUEST_USER], None)?;
        log(
            Level::Info,
            &format!("VM {}: password of {GUEST_USER} set", vm.vmid),
        );
        Ok(())
    }
}

proxlab_plugin_sdk::v0_1::after_start::export!(SetGuestPassword);
