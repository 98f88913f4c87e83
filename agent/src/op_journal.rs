//! The answers of finished operations, kept on disk in the state directory so that an
//! operation the hub retries after the agent restarted (a clone whose answer was lost with
//! the connection, say) is answered from the journal instead of running twice.
//!
//! One JSON line per answer, appended as operations finish; the file is rewritten with the
//! newest answers when it grows to twice what is remembered. A torn last line (the agent
//! died while writing it) is skipped on the next start. Readable by root only: answers may
//! carry what a guest command printed.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use proxlab_protocol::ResponseFrame;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Entry {
    op_id: String,
    answer: ResponseFrame,
}

struct Open {
    file: File,
    /// The newest lines, at most `keep`.
    newest: VecDeque<String>,
    /// Lines in the file now.
    lines: usize,
}

/// The journal file and what it holds.
pub(crate) struct OpJournal {
    path: PathBuf,
    keep: usize,
    open: Mutex<Open>,
}

impl OpJournal {
    /// Opens the journal at `path` (creating it) and returns the answers it remembers, oldest
    /// first, at most `keep` of them.
    pub(crate) fn open(
        path: &Path,
        keep: usize,
    ) -> std::io::Result<(Self, Vec<(String, ResponseFrame)>)> {
        let mut newest = VecDeque::new();
        let mut answers = VecDeque::new();
        if let Ok(file) = File::open(path) {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                let Ok(entry) = serde_json::from_str::<Entry>(&line) else {
                    continue;
                };
                answers.push_back((entry.op_id, entry.answer));
                newest.push_back(line);
                if newest.len() > keep {
                    newest.pop_front();
                    answers.pop_front();
                }
            }
        }
        let file = rewrite(path, &newest)?;
        let journal = Self {
            path: path.to_owned(),
            keep,
            open: Mutex::new(Open {
                file,
                lines: newest.len(),
                newest,
            }),
        };
        Ok((journal, answers.into()))
    }

    /// Records a finished operation's answer. A journal that cannot be written is logged,
    /// not fatal: the operation's answer is still remembered in memory.
    pub(crate) fn record(&self, op_id: &str, answer: &ResponseFrame) {
        let entry = Entry {
            op_id: op_id.to_owned(),
            answer: answer.clone(),
        };
        let Ok(line) = serde_json::to_string(&entry) else {
            return;
        };
        let mut open = self.open.lock().expect("not poisoned");
        open.newest.push_back(line.clone());
        if open.newest.len() > self.keep {
            open.newest.pop_front();
        }
        let written = if open.lines + 1 > 2 * self.keep {
            rewrite(&self.path, &open.newest).map(|file| {
                open.lines = open.newest.len();
                open.file = file;
            })
        } else {
            writeln!(open.file, "{line}").map(|()| open.lines += 1)
        };
        if let Err(err) = written {
            tracing::warn!(%err, path = %self.path.display(), "cannot write the operation journal");
        }
    }
}

/// Replaces the file with `lines` (through a temporary file and a rename) and opens it for
/// appending.
fn rewrite(path: &Path, lines: &VecDeque<String>) -> std::io::Result<File> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        for line in lines {
            writeln!(file, "{line}")?;
        }
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    OpenOptions::new().append(true).mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: u64) -> ResponseFrame {
        ResponseFrame::Ok {
            body: serde_json::json!({ "n": n }),
        }
    }

    #[test]
    fn answers_survive_a_reopen_and_the_file_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operations.jsonl");
        let (journal, none) = OpJournal::open(&path, 3).unwrap();
        assert!(none.is_empty());
        for n in 0..10 {
            journal.record(&format!("op-{n}"), &answer(n));
        }
        drop(journal);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 6, "{lines} lines");
        // A torn last line, as when the agent dies while writing it.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        write!(file, "{{\"op_id\":\"op-10\",\"ans").unwrap();
        drop(file);
        let (_, kept) = OpJournal::open(&path, 3).unwrap();
        let ids: Vec<&str> = kept.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["op-7", "op-8", "op-9"]);
        assert_eq!(kept[2].1, answer(9));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
