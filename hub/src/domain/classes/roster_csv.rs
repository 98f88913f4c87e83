//! Reading a class roster from a CSV file as schools export them (a student information
//! system, Excel, Google Sheets): a header row naming the columns, then one person a row.
//!
//! Columns: `username` and/or `email` (at least one), and optionally `display_name` (also
//! `name`, `display name`, `full name`). Header names ignore case and surrounding spaces;
//! columns that are not one of these are refused by name, so a misspelt `emial` column does
//! not silently leave everyone without an email. The file must be UTF-8 (a byte-order mark is
//! fine); commas or semicolons (Excel in much of Europe) separate fields. Every problem is
//! reported with its line, and a file with any problem imports nothing.

use crate::domain::accounts::validate_username;

/// The most rows a roster may have.
pub const MAX_ROWS: usize = 10_000;
/// How many problems are listed before the rest are only counted.
const MAX_LISTED_PROBLEMS: usize = 20;

/// One person on a roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    /// The line of the file it came from (the header is line 1).
    pub line: usize,
    pub username: String,
    /// Lower-case; empty when the file has no email for them.
    pub email: String,
    pub display_name: String,
}

/// Why a roster file was refused: every problem found, by line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct RosterProblems(pub Vec<String>);

fn describe(problems: &[String]) -> String {
    let listed: Vec<&str> = problems
        .iter()
        .take(MAX_LISTED_PROBLEMS)
        .map(String::as_str)
        .collect();
    let mut text = format!(
        "the roster was not imported ({} problem{}): {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        listed.join("; ")
    );
    if problems.len() > MAX_LISTED_PROBLEMS {
        text.push_str(&format!(
            "; and {} more",
            problems.len() - MAX_LISTED_PROBLEMS
        ));
    }
    text
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Username,
    Email,
    DisplayName,
}

fn column(header: &str) -> Option<Column> {
    match header
        .trim()
        .to_lowercase()
        .replace(['_', '-'], " ")
        .as_str()
    {
        "username" | "user name" | "login" => Some(Column::Username),
        "email" | "e mail" | "mail" | "email address" => Some(Column::Email),
        "display name" | "name" | "full name" => Some(Column::DisplayName),
        _ => None,
    }
}

/// The people a roster file lists, or every problem with it.
pub fn parse(bytes: &[u8]) -> Result<Vec<RosterEntry>, RosterProblems> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let line = bytes[..err.valid_up_to()]
            .iter()
            .filter(|byte| **byte == b'\n')
            .count()
            + 1;
        RosterProblems(vec![format!(
            "line {line} is not UTF-8 text: save the file as \"CSV UTF-8\""
        )])
    })?;
    let first_line = text.lines().next().unwrap_or_default();
    let delimiter = if first_line.contains(';') && !first_line.contains(',') {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|err| RosterProblems(vec![format!("the header row cannot be read: {err}")]))?
        .clone();
    let mut problems = Vec::new();
    let columns: Vec<Option<Column>> = headers.iter().map(column).collect();
    for (header, column) in headers.iter().zip(&columns) {
        if column.is_none() {
            problems.push(format!(
                "line 1: unknown column {header:?} (use username, email and display_name)"
            ));
        }
    }
    let find = |wanted: Column| columns.iter().position(|column| *column == Some(wanted));
    let (username_at, email_at, name_at) = (
        find(Column::Username),
        find(Column::Email),
        find(Column::DisplayName),
    );
    if username_at.is_none() && email_at.is_none() {
        problems.push("line 1: the header names neither a username nor an email column".into());
    }
    if !problems.is_empty() {
        return Err(RosterProblems(problems));
    }
    let mut entries: Vec<RosterEntry> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                let line = err.position().map_or(0, |at| line_at(text, at));
                problems.push(format!("line {line}: {err}"));
                continue;
            }
        };
        let line = record.position().map_or(0, |at| line_at(text, at));
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != headers.len() {
            problems.push(format!(
                "line {line}: {} fields where the header has {}",
                record.len(),
                headers.len()
            ));
            continue;
        }
        if entries.len() >= MAX_ROWS {
            problems.push(format!("more than {MAX_ROWS} people: split the roster"));
            break;
        }
        let field = |at: Option<usize>| at.and_then(|at| record.get(at)).unwrap_or_default();
        let email = field(email_at).to_lowercase();
        if !email.is_empty() && !looks_like_email(&email) {
            problems.push(format!("line {line}: {email:?} is not an email address"));
            continue;
        }
        let username = match field(username_at) {
            "" => email.clone(),
            name => name.to_lowercase(),
        };
        if username.is_empty() {
            problems.push(format!("line {line}: neither a username nor an email"));
            continue;
        }
        if let Err(err) = validate_username(&username) {
            problems.push(format!("line {line}: {err}"));
            continue;
        }
        if let Some(first) = seen.insert(username.clone(), line) {
            problems.push(format!(
                "line {line}: {username} is listed twice (also on line {first})"
            ));
            continue;
        }
        let display_name = field(name_at);
        if display_name.chars().count() > 128 || display_name.chars().any(char::is_control) {
            problems.push(format!(
                "line {line}: the display name must be up to 128 printable characters"
            ));
            continue;
        }
        entries.push(RosterEntry {
            line,
            username,
            email,
            display_name: display_name.to_owned(),
        });
    }
    if !problems.is_empty() {
        return Err(RosterProblems(problems));
    }
    if entries.is_empty() {
        return Err(RosterProblems(vec!["the roster lists nobody".into()]));
    }
    Ok(entries)
}

/// The line of the file a position is on, blank lines counted (the reader's own count skips
/// them).
fn line_at(text: &str, position: &csv::Position) -> usize {
    let mut byte = usize::try_from(position.byte())
        .unwrap_or(usize::MAX)
        .min(text.len());
    // A record's position can be where the blank lines before it begin.
    while matches!(text.as_bytes().get(byte), Some(b'\n' | b'\r')) {
        byte += 1;
    }
    text.as_bytes()[..byte]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn looks_like_email(text: &str) -> bool {
    text.len() <= 254
        && text.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.chars().any(|c| c.is_whitespace() || c.is_control())
                && !domain.contains('@')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &[u8]) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_good_roster_with_a_bom_semicolons_and_blank_lines() {
        let entries = parse(
            "\u{FEFF}Email;Display Name;Username\nSam@School.edu;Sam Student;\n\n;Kim Lee;kim\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0].username, "sam@school.edu",
            "the email names them"
        );
        assert_eq!(entries[0].email, "sam@school.edu");
        assert_eq!(entries[0].display_name, "Sam Student");
        assert_eq!(entries[0].line, 2);
        assert_eq!((entries[1].username.as_str(), entries[1].line), ("kim", 4));
    }

    #[test]
    fn quoted_fields_keep_their_commas() {
        let entries = parse(b"username,name\nkim,\"Lee, Kim\"\n").unwrap();
        assert_eq!(entries[0].display_name, "Lee, Kim");
    }

    #[test]
    fn every_problem_is_named_with_its_line_and_nothing_is_returned() {
        let text = problems(
            b"username,email\nsam,sam@school.edu\nSAM,other@school.edu\nbad name,\nkim,not-an-email\nx,y,z\n",
        );
        assert!(text.contains("4 problems"), "{text}");
        assert!(
            text.contains("line 3: sam is listed twice (also on line 2)"),
            "{text}"
        );
        assert!(text.contains("line 4: invalid username"), "{text}");
        assert!(text.contains("line 5: \"not-an-email\""), "{text}");
        assert!(
            text.contains("line 6: 3 fields where the header has 2"),
            "{text}"
        );
    }

    #[test]
    fn unknown_and_missing_columns() {
        let text = problems(b"username,emial\nsam,sam@school.edu\n");
        assert!(text.contains("unknown column \"emial\""), "{text}");
        let text = problems(b"name\nSam\n");
        assert!(
            text.contains("neither a username nor an email column"),
            "{text}"
        );
        assert!(problems(b"username\n").contains("lists nobody"));
        assert!(problems(b"").contains("neither"));
    }

    #[test]
    fn bad_encodings_are_refused_with_their_line() {
        // "José" in Latin-1, as an old Excel saves it.
        let text = problems(b"username,name\nsam,Sam\njose,Jos\xE9\n");
        assert!(text.contains("line 3 is not UTF-8"), "{text}");
    }

    #[test]
    fn ten_thousand_rows_at_most() {
        let mut text = String::from("username\n");
        for n in 0..=MAX_ROWS {
            text.push_str(&format!("s{n}\n"));
        }
        assert!(problems(text.as_bytes()).contains("more than 10000 people"));
        let five_thousand: String = std::iter::once("username".to_owned())
            .chain((0..5000).map(|n| format!("s{n}")))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(parse(five_thousand.as_bytes()).unwrap().len(), 5000);
    }
}
