//! Configuration errors and the configuration commands.

mod common;

use common::{plugin, run_to_exit, scratch_dir};

fn write_config(text: &str) -> String {
    let path = scratch_dir().join("bad.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn bad_yaml_exits_1_naming_file_and_line() {
    let path = write_config("workers: 2\nbind: [unclosed\n");
    let (status, out) = run_to_exit(&["-c", &path]);
    assert_eq!(status.code(), Some(1));
    assert!(out.contains(&path) && out.contains("invalid YAML"), "{out}");
}

#[test]
fn unknown_key_exits_1_naming_key_and_line() {
    let path = write_config("workers: 2\nwrokers: 3\n");
    let (status, out) = run_to_exit(&["-c", &path]);
    assert_eq!(status.code(), Some(1));
    assert!(
        out.contains(&format!("{path}:2")) && out.contains("unknown key `wrokers`"),
        "{out}"
    );
}

#[test]
fn bad_value_exits_1_naming_key_and_line() {
    let path = write_config("threads: 0\n");
    let (status, out) = run_to_exit(&["-c", &path]);
    assert_eq!(status.code(), Some(1));
    assert!(
        out.contains(&format!("{path}:1")) && out.contains("key `threads`"),
        "{out}"
    );
    let (status, out) = run_to_exit(&["--workers", "many"]);
    assert_eq!(status.code(), Some(1));
    assert!(out.contains("--workers"), "{out}");
}

#[test]
fn missing_plugin_exits_1_naming_the_path() {
    let path = write_config("bind: 127.0.0.1:0\napp:\n  path: /nonexistent/libnothing.so\n");
    let (status, out) = run_to_exit(&["-c", &path]);
    assert_eq!(status.code(), Some(1));
    assert!(out.contains("/nonexistent/libnothing.so"), "{out}");
}

#[test]
fn not_a_plugin_names_the_entry_symbol() {
    // The ferricorn binary's own libc is a shared object without the entry symbol.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("a libc.so.6");
    let (status, out) = run_to_exit(&["--check-config", libc]);
    assert_eq!(status.code(), Some(1));
    assert!(out.contains("ferricorn_app"), "{out}");
}

#[test]
fn check_config_trial_loads_the_app() {
    let hello = plugin("hello").display().to_string();
    let (status, out) = run_to_exit(&["--check-config", &hello]);
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("app `hello`"), "{out}");
    let chaos = plugin("chaos").display().to_string();
    let (status, out) = run_to_exit(&["--check-config", "--app-config", "fail_init=true", &chaos]);
    assert_eq!(status.code(), Some(1));
    assert!(out.contains("init failed on purpose"), "{out}");
}

#[test]
fn print_config_shows_the_effective_values() {
    let path = write_config("workers: 3\nkeepalive: 7\napp:\n  config:\n    greeting: hi\n");
    let (status, out) = run_to_exit(&["-c", &path, "--threads", "9", "--print-config"]);
    assert_eq!(status.code(), Some(0), "{out}");
    let yaml: serde_json::Value = serde_json::to_value(out.lines().collect::<Vec<_>>()).unwrap();
    let text = yaml.to_string();
    for expected in [
        "workers: 3",
        "keepalive: 7",
        "threads: 9",
        "greeting: hi",
        "limit_request_line: 4094",
    ] {
        assert!(text.contains(expected), "missing {expected} in {out}");
    }
}

/// Asserts that the document `doc` (a path in the repository) holds the table `ferricorn
/// FLAG` prints.
fn assert_doc_has_table(doc: &str, flag: &str) {
    let (status, table) = run_to_exit(&[flag]);
    assert!(status.success());
    let text = std::fs::read_to_string(common::repo_path(doc)).unwrap();
    assert!(
        text.contains(table.trim()),
        "the table in {doc} is out of date: replace it with `ferricorn {flag}`"
    );
}

#[test]
fn settings_reference_matches_the_settings() {
    assert_doc_has_table("systemd/settings.md", "--settings-markdown");
}

#[test]
fn help_names_keys_defaults_and_units_and_startup_errors_print_once() {
    let (status, out) = run_to_exit(&["--help"]);
    assert_eq!(status.code(), Some(0));
    assert!(
        out.contains("[YAML key: keepalive; default: 5, in seconds]"),
        "{out}"
    );
    assert!(out.contains("[YAML key: limit_request_head; default: 65536, in bytes]"));
    // The error log is stderr by default: the reason is printed once, not twice.
    let (status, out) = run_to_exit(&["/nonexistent-ferricorn/libapp.so"]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert_eq!(out.matches("libapp.so: no such file").count(), 1, "{out}");
    // A flag clap cannot parse exits 2 (as gunicorn's argparse does).
    let (status, _) = run_to_exit(&["--no-such-flag"]);
    assert_eq!(status.code(), Some(2));
}

/// `--help` names the `ctl` subcommand; `ferricorn help` is the help, not a plugin named
/// "help"; `ferricorn ctl --help` and `ferricorn help ctl` call it `ferricorn ctl`.
#[test]
fn help_lists_ctl_and_help_is_help() {
    let (status, out) = run_to_exit(&["--help"]);
    assert_eq!(status.code(), Some(0));
    assert!(out.contains("ctl COMMAND..."), "{out}");
    let (status, out) = run_to_exit(&["help"]);
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("Usage: ferricorn [OPTIONS] [APP]"), "{out}");
    assert!(!out.contains("no such file"), "{out}");
    for args in [&["ctl", "--help"][..], &["help", "ctl"][..]] {
        let (status, out) = run_to_exit(args);
        assert_eq!(status.code(), Some(0), "{out}");
        assert!(
            out.contains("Usage: ferricorn ctl [OPTIONS] <COMMAND>..."),
            "{out}"
        );
    }
}

#[test]
fn gunicorn_settings_are_recognised_and_the_readme_table_is_current() {
    assert_doc_has_table("README.md", "--gunicorn-markdown");
    let dir = scratch_dir();
    for (key, value, expected) in [
        (
            "preload_app",
            "true",
            "are loaded after fork in each worker",
        ),
        ("daemon", "true", "run under systemd"),
        (
            "worker_class",
            "gthread",
            "the thread pool is the only worker type",
        ),
        ("statsd_host", "localhost:8125", "set `metrics_bind`"),
        ("ciphers", "TLSv1.2", "rustls picks safe defaults"),
    ] {
        let file = dir.join(format!("{key}.yaml"));
        std::fs::write(&file, format!("workers: 1\n{key}: {value}\n")).unwrap();
        let (status, out) = run_to_exit(&["-c", &file.display().to_string(), "--check-config"]);
        assert_eq!(status.code(), Some(1), "{key}: {out}");
        assert!(
            out.contains(expected) && out.contains(":2:"),
            "{key}: {out}"
        );
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_gunicorn_list_agrees_with_the_settings_table() {
    use ferricorn::config::SETTINGS;
    use ferricorn::gunicorn::{explain, GUNICORN_SETTINGS};
    assert_eq!(GUNICORN_SETTINGS.len(), 120, "gunicorn 27 has 120 settings");
    for (name, instead) in GUNICORN_SETTINGS {
        let here = SETTINGS.iter().any(|s| s.name == *name);
        assert_eq!(
            here,
            instead.is_none(),
            "`{name}`: same name here iff listed as such"
        );
    }
    let mut names: Vec<_> = GUNICORN_SETTINGS.iter().map(|(n, _)| n).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), GUNICORN_SETTINGS.len(), "no name twice");
    assert!(explain("preload_app")
        .unwrap()
        .contains("loaded after fork"));
    assert_eq!(explain("workers"), None);
    assert_eq!(explain("wrokers"), None);
}

/// Every error of a configuration comes at once, a line each with the file and line, and a
/// misspelt key gets the setting it most likely meant: a migrated file is fixed in one pass.
/// `--check-config` prints them all and exits 1.
#[test]
fn every_configuration_error_comes_at_once() {
    let path = write_config(
        "bind: [\"127.0.0.1:0\"]\nworker: 4\nthreads: 0\nkeepalive: forever\nworker_class: gthread\ntimout: 30\nno_such_thing_at_all: 1\n",
    );
    let (status, out) = run_to_exit(&["-c", &path, "--check-config"]);
    assert_eq!(status.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let expected = [
        ":2: unknown key `worker`: did you mean `workers`?",
        ":3: key `threads`: must be a whole number from 1 to 1024, got 0",
        ":4: key `keepalive`: must be a whole number",
        ":5: `worker_class` is a gunicorn setting",
        ":6: unknown key `timout`: did you mean `timeout`?",
        ":7: unknown key `no_such_thing_at_all` (see `ferricorn --help` for the settings)",
    ];
    assert_eq!(lines.len(), expected.len(), "{out}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(line.starts_with(&format!("ferricorn: {path}")), "{line}");
        assert!(line.contains(want), "{line} lacks {want}");
    }
    // Serving refuses the same way.
    let (status, again) = run_to_exit(&["-c", &path]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(again.lines().count(), expected.len(), "{again}");
}

/// gunicorn's command line: flags ferricorn has under another name work (`--log-file`,
/// `-p`, `--limit-request-field_size`, `-u`); the others get the same one-line explanation
/// as their YAML key, and exit 2.
#[test]
fn gunicorn_flags_work_or_are_explained() {
    let (status, out) = run_to_exit(&[
        "--log-file",
        "/tmp/ferricorn-gunicorn-flags.log",
        "-p",
        "/tmp/ferricorn-gunicorn-flags.pid",
        "--limit-request-field_size",
        "100",
        "-u",
        "nobody",
        "--print-config",
        "/nonexistent/libapp.so",
    ]);
    assert_eq!(status.code(), Some(0), "{out}");
    for line in [
        "errorlog: /tmp/ferricorn-gunicorn-flags.log",
        "pidfile: /tmp/ferricorn-gunicorn-flags.pid",
        "limit_request_field_size: 100",
        "user: nobody",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} in {out}");
    }
    for (args, says) in [
        (
            &["-k", "gthread"][..],
            "-k: `worker_class` is a gunicorn setting",
        ),
        (
            &["--worker-class=gthread"][..],
            "--worker-class: `worker_class`",
        ),
        (&["--preload"][..], "--preload: `preload_app`"),
        (&["-D"][..], "-D: `daemon`"),
        (&["--reload"][..], "--reload: `reload`"),
        (
            &["--statsd-host", "localhost:8125"][..],
            "set `metrics_bind`",
        ),
    ] {
        let (status, out) = run_to_exit(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {out}");
        assert!(
            out.starts_with("ferricorn: ") && out.contains(says),
            "{args:?}: {out}"
        );
        assert_eq!(out.lines().count(), 1, "{out}");
    }
}

/// A gunicorn.conf.py given to `-c`: its plain `name = value` lines are read as settings
/// (Python literals), and every line of real Python is refused with its line number.
#[test]
fn a_gunicorn_conf_py_is_read_for_its_plain_settings() {
    let dir = scratch_dir();
    let plain = dir.join("gunicorn.conf.py");
    std::fs::write(
        &plain,
        "# gunicorn settings\nbind = [\"127.0.0.1:8001\"]\nthreads = 8\nkeepalive = 10  # seconds\nforwarded_allow_ips = '10.0.0.1'\n",
    )
    .unwrap();
    let (status, out) = run_to_exit(&[
        "-c",
        plain.to_str().unwrap(),
        "--print-config",
        "/nonexistent/libapp.so",
    ]);
    assert_eq!(status.code(), Some(0), "{out}");
    for line in ["- 127.0.0.1:8001", "threads: 8", "keepalive: 10"] {
        assert!(out.lines().any(|l| l == line), "{line} in {out}");
    }
    let python = dir.join("python.conf.py");
    std::fs::write(
        &python,
        "import multiprocessing\nworkers = multiprocessing.cpu_count() * 2 + 1\nthreads = 4\ndef on_starting(server):\n    pass\n",
    )
    .unwrap();
    let (status, out) = run_to_exit(&["-c", python.to_str().unwrap(), "--check-config"]);
    assert_eq!(status.code(), Some(1), "{out}");
    let name = python.display().to_string();
    for line in [2, 4, 5] {
        assert!(
            out.contains(&format!("{name}:{line}: `")) && out.contains("ferricorn reads no Python"),
            "line {line}: {out}"
        );
    }
    assert_eq!(out.lines().count(), 3, "{out}");
}

/// `--man-page` prints ferricorn(1) in roff, from the same options and settings as `--help`:
/// every setting's flag and documentation is in it, and the `ctl` subcommand.
#[test]
fn the_man_page_has_every_setting() {
    let (status, out) = run_to_exit(&["--man-page"]);
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains(".TH ferricorn 1"), "{out}");
    for setting in ferricorn::config::SETTINGS
        .iter()
        .filter(|s| !s.flag.is_empty())
    {
        let flag = format!("\\-\\-{}", setting.flag.replace('-', "\\-"));
        assert!(out.contains(&flag), "{flag} in the man page");
        assert!(
            out.contains(&format!("YAML key: {}", setting.name.replace('-', "\\-"))),
            "{}",
            setting.name
        );
    }
    assert!(out.contains("ctl COMMAND"), "{out}");
}
