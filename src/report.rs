//! The messages a worker sends its master over the report pipe (one line each, written with
//! one write(2), so a line is never split between writers), in one vocabulary for both
//! sides: typed here, encoded and decoded only here.

use std::os::fd::OwnedFd;

/// A worker's message to its master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Booted: the app is initialised and the worker is about to serve.
    Ready,
    /// Alive (sent once a second; `timeout` counts from the last message of any kind).
    Heartbeat,
    /// Asks for a replacement (max_requests reached, or a request stuck past
    /// request_timeout); the master starts one and then stops this worker.
    ReplaceMe,
    /// Could not boot, and why (one line).
    BootError(String),
}

impl Report {
    /// The wire form: one line, newline-terminated.
    pub fn encode(&self) -> String {
        match self {
            Report::Ready => "ready\n".into(),
            Report::Heartbeat => "hb\n".into(),
            Report::ReplaceMe => "replace-me\n".into(),
            Report::BootError(why) => format!("boot-error {}\n", why.replace('\n', " ")),
        }
    }

    /// Parses one line (without its newline); `None` for a line this master does not know.
    pub fn decode(line: &str) -> Option<Report> {
        match line {
            "ready" => Some(Report::Ready),
            "hb" => Some(Report::Heartbeat),
            "replace-me" => Some(Report::ReplaceMe),
            _ => line
                .strip_prefix("boot-error ")
                .map(|why| Report::BootError(why.to_string())),
        }
    }

    /// Writes the message to the pipe `fd` (best effort: a master that is gone cannot read it).
    pub fn send(&self, fd: &OwnedFd) {
        let _ = nix::unistd::write(fd, self.encode().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        for report in [
            Report::Ready,
            Report::Heartbeat,
            Report::ReplaceMe,
            Report::BootError("no such file\nreally".into()),
        ] {
            let line = report.encode();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let back = Report::decode(line.trim_end_matches('\n')).unwrap();
            match report {
                Report::BootError(_) => {
                    assert_eq!(back, Report::BootError("no such file really".into()))
                }
                other => assert_eq!(back, other),
            }
        }
        assert_eq!(Report::decode("nonsense"), None);
    }
}
