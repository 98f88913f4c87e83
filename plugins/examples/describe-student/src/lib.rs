//! Keeps a section of each VM's description (its notes in Proxmox) that says whose VM it is:
//! the class, the student (name, username and email) and whom to ask for help. Written when
//! the VM is made, and again whenever a student gets the VM or is taken off it.
//!
//! Setting `contact` (site-wide, or per class): whom students ask for help.

use proxlab_plugin_sdk::{ConfigEdit, Facts, StudentFacts, assigned, configure, unassigned};

struct DescribeStudent;

/// The description section for `student` (none: the VM waits for one).
fn section(facts: &Facts, student: Option<&StudentFacts>) -> ConfigEdit {
    let class = &facts.class;
    let mut text = format!("Class: {} (#{})\n", class.name, class.id);
    match student {
        Some(student) => {
            text.push_str(&format!(
                "Student: {} ({})\n",
                student.display_name, student.username
            ));
            if let Some(email) = &student.email {
                text.push_str(&format!("Email: {email}\n"));
            }
        }
        None if facts.vm.kind == "teacher" => text.push_str("The teacher's VM\n"),
        None => text.push_str("Not given to a student yet\n"),
    }
    if let Some(contact) = facts.text("contact") {
        text.push_str(&format!("Help: {contact}\n"));
    }
    ConfigEdit::Describe(text)
}

impl configure::Guest for DescribeStudent {
    fn configure(facts: Facts) -> Result<Vec<ConfigEdit>, String> {
        Ok(vec![section(&facts, facts.student.as_ref())])
    }
}

impl assigned::Guest for DescribeStudent {
    fn assigned(facts: Facts) -> Result<Vec<ConfigEdit>, String> {
        Ok(vec![section(&facts, facts.student.as_ref())])
    }
}

impl unassigned::Guest for DescribeStudent {
    fn unassigned(facts: Facts) -> Result<Vec<ConfigEdit>, String> {
        Ok(vec![section(&facts, None)])
    }
}

configure::export!(DescribeStudent);
assigned::export!(DescribeStudent);
unassigned::export!(DescribeStudent);
