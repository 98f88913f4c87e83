//! Usage reports as CSV (RFC 4180), safe to open in a spreadsheet: fields with separators,
//! quotes or line breaks are quoted, and a field a spreadsheet would run as a formula starts
//! with an apostrophe.

use super::{ClassUsage, SiteUsage, UsageLine};

/// One field.
fn field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn line(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|text| field(text))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// A class's report: one line per student.
pub fn class_report(usage: &ClassUsage) -> String {
    let mut out = line(&[
        "student".into(),
        "vmid".into(),
        "hours_run".into(),
        "hours_counted".into(),
        "hours_added".into(),
        "sessions".into(),
        "idle_stops".into(),
    ]);
    for student in &usage.students {
        out.push_str(&line(&[
            student.username.clone(),
            student
                .vmid
                .map(|vmid| vmid.to_string())
                .unwrap_or_default(),
            student.hours_run.to_string(),
            student
                .hours_counted
                .map(|hours| hours.to_string())
                .unwrap_or_default(),
            student.hours_added.to_string(),
            student.sessions.to_string(),
            student.idle_stops.to_string(),
        ]));
    }
    out
}

/// The site's report by `class` or by `node`: one line per class or node, one column per
/// month, then the total.
pub fn site_report(usage: &SiteUsage, by_node: bool) -> String {
    let mut header = vec![if by_node { "node" } else { "class" }.to_owned()];
    header.extend(usage.months.iter().cloned());
    header.push("total".into());
    let mut out = line(&header);
    let lines: &[UsageLine] = if by_node {
        &usage.by_node
    } else {
        &usage.by_class
    };
    for usage_line in lines {
        let mut fields = vec![usage_line.name.clone()];
        fields.extend(usage_line.hours.iter().map(f64::to_string));
        fields.push(usage_line.total.to_string());
        out.push_str(&line(&fields));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(field("alice"), "alice");
        assert_eq!(field("Networks, 101"), "\"Networks, 101\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("-1"), "'-1");
    }

    #[test]
    fn a_site_report_has_a_column_per_month() {
        let usage = SiteUsage {
            months: vec!["2026-11".into(), "2026-12".into()],
            by_class: vec![UsageLine {
                name: "Networks, 101".into(),
                hours: vec![1.5, 2.0],
                total: 3.5,
            }],
            by_node: Vec::new(),
            time_zone: "UTC".into(),
        };
        assert_eq!(
            site_report(&usage, false),
            "class,2026-11,2026-12,total\r\n\"Networks, 101\",1.5,2,3.5\r\n"
        );
        assert_eq!(site_report(&usage, true), "node,2026-11,2026-12,total\r\n");
    }
}
