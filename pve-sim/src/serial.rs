//! The serial line of a simulated VM (`serial0: socket`): a login-free shell prompt that
//! echoes what is typed, like a guest's `getty` on `ttyS0` would, and answers a few commands,
//! so a serial console can be tested without a real guest.

use std::io::{self, Read, Write};

/// What a connection to the serial port is answered with, byte by byte.
pub struct SerialLine {
    hostname: String,
    line: Vec<u8>,
}

/// The longest line the shell keeps; more is ignored (a real line discipline has such a
/// limit too).
const MAX_LINE: usize = 4096;

impl SerialLine {
    pub fn new(hostname: &str) -> Self {
        Self {
            hostname: hostname.to_owned(),
            line: Vec::new(),
        }
    }

    fn prompt(&self) -> String {
        format!("root@{}:~# ", self.hostname)
    }

    /// The banner and first prompt a new connection sees.
    pub fn greeting(&self) -> String {
        format!(
            "\r\nDebian GNU/Linux 12 {} ttyS0\r\n\r\n{}",
            self.hostname,
            self.prompt()
        )
    }

    /// What the line answers to `input`: echoes, erasures, and command output.
    pub fn feed(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &byte in input {
            match byte {
                b'\r' | b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    let line = String::from_utf8_lossy(&self.line).into_owned();
                    self.line.clear();
                    out.extend_from_slice(self.run(line.trim()).as_bytes());
                    out.extend_from_slice(self.prompt().as_bytes());
                }
                0x7f | 0x08 if self.line.pop().is_some() => {
                    out.extend_from_slice(b"\x08 \x08");
                }
                // Ctrl-C drops the line, as a shell does.
                0x03 => {
                    self.line.clear();
                    out.extend_from_slice(b"^C\r\n");
                    out.extend_from_slice(self.prompt().as_bytes());
                }
                byte if byte >= 0x20 && byte != 0x7f && self.line.len() < MAX_LINE => {
                    self.line.push(byte);
                    out.push(byte);
                }
                _ => {}
            }
        }
        out
    }

    /// The output of one command line.
    fn run(&self, line: &str) -> String {
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        match command {
            "" => String::new(),
            "hostname" => format!("{}\r\n", self.hostname),
            "whoami" => "root\r\n".into(),
            "uname" => "Linux\r\n".into(),
            "echo" => format!("{rest}\r\n"),
            other => format!("-bash: {other}: command not found\r\n"),
        }
    }
}

/// Serves one connection to the serial port until it closes.
pub fn serve(stream: &mut (impl Read + Write), hostname: &str) -> io::Result<()> {
    let mut line = SerialLine::new(hostname);
    stream.write_all(line.greeting().as_bytes())?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        let answer = line.feed(&buf[..n]);
        stream.write_all(&answer)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_typing_and_answers_commands() {
        let mut line = SerialLine::new("lab-7");
        assert!(line.greeting().ends_with("root@lab-7:~# "));
        assert_eq!(line.feed(b"hostnamX"), b"hostnamX");
        assert_eq!(line.feed(b"\x7fe"), b"\x08 \x08e");
        let out = String::from_utf8(line.feed(b"\r")).unwrap();
        assert_eq!(out, "\r\nlab-7\r\nroot@lab-7:~# ");
        let out = String::from_utf8(line.feed(b"echo hi there\n")).unwrap();
        assert_eq!(out, "echo hi there\r\nhi there\r\nroot@lab-7:~# ");
        let out = String::from_utf8(line.feed(b"rm -rf /\r")).unwrap();
        assert!(out.contains("-bash: rm: command not found"), "{out}");
    }

    #[test]
    fn control_bytes_are_not_echoed_and_lines_are_bounded() {
        let mut line = SerialLine::new("x");
        assert!(line.feed(b"\x1b\x00\x7f").is_empty());
        let long = vec![b'a'; MAX_LINE + 10];
        assert_eq!(line.feed(&long).len(), MAX_LINE);
    }
}
