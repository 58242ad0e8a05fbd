//! The command line: clap derive for the fixed options, plus one flag per setting generated
//! from [`config::SETTINGS`], then the three modes: serve, `--check-config`, `--print-config`.

use crate::config::{self, Kind, Overrides, SETTINGS};
use crate::master::upgrade;
use crate::{listeners, logging, master, process, systemd};
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};
use std::path::{Path, PathBuf};

/// ferricorn: a pre-fork HTTP/1.1 application server for cdylib plugins.
#[derive(Parser, Debug)]
#[command(name = "ferricorn", version, about, long_about = None, after_help = SUBCOMMANDS)]
pub struct Cli {
    /// YAML configuration file (settings below override it).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration and trial-load the app in a child process, then exit 0 or 1.
    #[arg(long)]
    pub check_config: bool,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Print the settings table (Markdown) of the settings reference, systemd/settings.md, and exit.
    #[arg(long, hide = true)]
    pub settings_markdown: bool,
    /// Print the "Coming from gunicorn" table (Markdown) used in the README and exit.
    #[arg(long, hide = true)]
    pub gunicorn_markdown: bool,
    /// Print the manual page ferricorn(1) (roff, from the same options and settings as
    /// `--help`) and exit; the install step puts it in man1.
    #[arg(long, hide = true)]
    pub man_page: bool,
    /// The plugin shared object to serve (same as `app.path`).
    #[arg(value_name = "APP")]
    pub app: Option<PathBuf>,
}

/// The subcommands, which take the place of APP (listed after the options in `--help`).
const SUBCOMMANDS: &str = "Commands (instead of APP):
  ctl COMMAND...  Steer a running ferricorn through its control_socket: show workers|stats|
                  listeners|config, worker add|remove [N], worker kill PID, reload, reopen,
                  shutdown [graceful|quick] (`ferricorn ctl --help`)
  help [ctl]      This help, or ctl's";

/// The clap command: [`Cli`] plus one argument per setting that has a flag.
fn command() -> clap::Command {
    let mut command = Cli::command();
    for setting in SETTINGS.iter().filter(|s| !s.flag.is_empty()) {
        let multiple = matches!(setting.kind, Kind::Addresses | Kind::Pairs);
        let mut arg = Arg::new(setting.name)
            .long(setting.flag)
            .value_name(if setting.kind == Kind::Pairs {
                "KEY=VALUE"
            } else {
                "VALUE"
            })
            .help(flag_help(setting))
            .action(if multiple {
                ArgAction::Append
            } else {
                ArgAction::Set
            });
        if setting.kind == Kind::Bool {
            // `--reuse-port` alone means true, as gunicorn's switch; `--reuse-port false` too.
            arg = arg.num_args(0..=1).default_missing_value("true");
        }
        if let Kind::Choice {
            bare: Some(bare), ..
        } = setting.kind
        {
            // `--proxy-protocol` alone means auto, as in gunicorn.
            arg = arg.num_args(0..=1).default_missing_value(bare);
        }
        if let Some(short) = setting.short {
            arg = arg.short(short);
        }
        command = command.arg(gunicorn_aliases(arg, setting));
    }
    command
}

/// `arg` also answering to gunicorn's own flags for `setting` where they differ from
/// ferricorn's (`--log-file` for `--error-logfile`, `-p` for `--pid`...), hidden from help.
fn gunicorn_aliases(mut arg: Arg, setting: &config::Setting) -> Arg {
    for flag in crate::gunicorn::irregular_flags_of(setting.name) {
        match (
            flag.strip_prefix("--"),
            flag.strip_prefix('-').and_then(|f| f.chars().next()),
        ) {
            (Some(long), _) if long != setting.flag => arg = arg.alias(long),
            (None, Some(short)) if setting.short.is_none() => arg = arg.short_alias(short),
            _ => {}
        }
    }
    arg
}

/// The first gunicorn flag among `args` that ferricorn does not have (`-k`, `--preload`,
/// `--statsd-host`...): the flag and what ferricorn does instead, as its YAML key gets.
/// Flags ferricorn knows, under gunicorn's name or its own, are clap's to parse.
fn gunicorn_flag_refused(args: &[std::ffi::OsString], command: &clap::Command) -> Option<String> {
    let known = |flag: &str| {
        let (long, short) = (flag.strip_prefix("--"), flag.strip_prefix('-'));
        matches!(flag, "-h" | "--help" | "-V" | "--version")
            || command.get_arguments().any(|a| {
                long.is_some_and(|l| {
                    a.get_long() == Some(l) || a.get_all_aliases().is_some_and(|al| al.contains(&l))
                }) || short.and_then(|s| s.chars().next()).is_some_and(|c| {
                    a.get_short() == Some(c)
                        || a.get_all_short_aliases().is_some_and(|al| al.contains(&c))
                })
            })
    };
    let words = args.iter().skip(1).filter_map(|a| a.to_str());
    for word in words.take_while(|w| *w != "--") {
        let flag = match word.strip_prefix("--") {
            Some(_) => word.split('=').next().unwrap_or(word),
            None if word.starts_with('-') => match word.get(..2) {
                Some(flag) => flag,
                None => continue,
            },
            None => continue,
        };
        if known(flag) {
            continue;
        }
        let why = crate::gunicorn::setting_of_flag(flag).and_then(crate::gunicorn::explain);
        if let Some(why) = why {
            return Some(format!("{flag}: {why}"));
        }
    }
    None
}

/// A flag's help: the setting's doc, then its YAML key, default and unit (from the
/// settings table, as in the README).
fn flag_help(setting: &config::Setting) -> String {
    let unit = match setting.kind {
        Kind::Integer { unit, .. } => format!(", in {unit}"),
        _ => String::new(),
    };
    format!(
        "{} [YAML key: {}; default: {}{unit}]",
        setting.description(),
        setting.name,
        setting.default
    )
}

fn overrides(matches: &ArgMatches, cli: &Cli) -> Result<Overrides, String> {
    let mut overrides = Overrides::default();
    for (index, setting) in SETTINGS
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.flag.is_empty())
    {
        if let Some(values) = matches.get_many::<String>(setting.name) {
            let values: Vec<String> = values.cloned().collect();
            overrides.set(index, &values)?;
        }
    }
    match cli.app.as_deref() {
        Some(app) if app.to_str().is_some_and(config::is_python_app) => {
            overrides.set_wsgi_app(&app.to_string_lossy());
        }
        Some(app) => overrides.set_app_path(app),
        None => {}
    }
    Ok(overrides)
}

/// Runs ferricorn with the process arguments; returns the exit status.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "ctl") {
        // `ferricorn ctl ...`: the control-socket client (its own arguments).
        return crate::master::control::ctl_main(args[1..].to_vec());
    }
    if args.get(1).is_some_and(|a| a == "help") {
        // `ferricorn help [ctl]`, as git and cargo answer it.
        if args.get(2).is_some_and(|a| a == "ctl") {
            return crate::master::control::ctl_main(vec!["ctl".into(), "--help".into()]);
        }
        let _ = command().print_long_help();
        return 0;
    }
    if let Some(refused) = gunicorn_flag_refused(&args, &command()) {
        // As clap refuses a flag it does not know: exit 2.
        eprintln!("ferricorn: {refused}");
        return 2;
    }
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.settings_markdown {
        print!("{}", config::markdown_table());
        return 0;
    }
    if cli.man_page {
        let page = clap_mangen::Man::new(command()).render(&mut std::io::stdout());
        return i32::from(page.is_err());
    }
    if cli.gunicorn_markdown {
        let has = |name: &str| SETTINGS.iter().any(|s| s.name == name);
        print!("{}", crate::gunicorn::markdown_table(has));
        return 0;
    }
    // Absolute, so that a reload finds the file after `chdir`.
    let file = cli
        .config
        .as_deref()
        .map(|f| std::path::absolute(f).unwrap_or(f.to_path_buf()));
    let loaded =
        overrides(&matches, &cli).and_then(|o| Ok((config::load(file.as_deref(), &o)?, o)));
    let (config, overrides) = match loaded {
        Ok(pair) => pair,
        Err(errors) => {
            // Every configuration error found, a line each, so one pass fixes them all.
            for error in errors.lines() {
                eprintln!("ferricorn: {error}");
            }
            return 1;
        }
    };
    if let Err(e) = process::apply_startup(&config) {
        eprintln!("ferricorn: {e}");
        return 1;
    }
    if cli.print_config {
        print!("{}", config.to_yaml());
        return 0;
    }
    if cli.check_config {
        return match logging::check_paths(&config.log_targets())
            .and_then(|()| crate::master::probe::probe(&config))
        {
            Ok(name) => {
                println!("ferricorn: configuration OK; app `{name}` loads and initialises");
                0
            }
            Err(e) => {
                eprintln!("ferricorn: {e}");
                1
            }
        };
    }
    serve(config, overrides)
}

fn serve(config: config::Config, overrides: Overrides) -> i32 {
    if let Err(e) = logging::configure(&config.log_targets()) {
        eprintln!("ferricorn: {e}");
        return 1;
    }
    logging::install_panic_hook();
    logging::info(format_args!(
        "Starting ferricorn {}",
        env!("CARGO_PKG_VERSION")
    ));
    if let Some(warning) = process::raise_nofile_limit(config.worker_connections) {
        logging::warning(warning);
    }
    match crate::master::probe::probe(&config) {
        Ok(name) => logging::info(format_args!(
            "Using app `{name}` from {}",
            config
                .app_path
                .as_deref()
                .unwrap_or(Path::new("?"))
                .display()
        )),
        Err(e) => return startup_failed(&config, &e),
    }
    let listening = match listening_sockets(&config) {
        Ok(listening) => listening,
        Err(e) => return startup_failed(&config, &e),
    };
    master::run(config, overrides, listening)
}

/// Logs why the server cannot start (critical) and returns exit status 1; the reason goes to
/// the terminal too when the error log is a file, but only once when the error log is stderr.
fn startup_failed(config: &config::Config, error: &str) -> i32 {
    logging::critical(error);
    if config.errorlog != "-" {
        eprintln!("ferricorn: {error}");
    }
    1
}

/// The listening sockets: handed over by the previous master (USR2), else passed by systemd
/// (socket activation), else bound from `bind`.
fn listening_sockets(config: &config::Config) -> Result<master::Listening, String> {
    let handover = upgrade::inherited()?;
    if !handover.listeners.is_empty() {
        logging::info(format_args!(
            "Upgrade: serving on {} socket(s) handed over by the previous master, \
             and {} worker socket(s) (reuseport)",
            handover.listeners.len(),
            handover.worker_sockets.each().count()
        ));
        for listener in &handover.listeners {
            listeners::defer_accept_on(listener, config.defer_accept)?;
        }
        return Ok(master::Listening {
            listeners: handover.listeners,
            origin: master::Origin::Upgrade,
            worker_sockets: handover.worker_sockets,
        });
    }
    let listening = |listeners, origin| master::Listening {
        listeners,
        origin,
        worker_sockets: Default::default(),
    };
    let activated = systemd::activated_listeners()?;
    if !activated.is_empty() {
        let names: Vec<&str> = activated.iter().map(|(_, name)| name.as_str()).collect();
        logging::info(format_args!(
            "Using {} socket(s) from systemd ({}); `bind` is ignored",
            activated.len(),
            names.join(", ")
        ));
        let listeners = activated
            .into_iter()
            .map(|(listener, _)| listener)
            .collect();
        return Ok(listening(listeners, master::Origin::SocketActivated));
    }
    Ok(listening(bind_all(config)?, master::Origin::Bound))
}

/// Binds every address of `bind`. Errors name the address.
fn bind_all(config: &config::Config) -> Result<Vec<listeners::Listener>, String> {
    config
        .bind
        .iter()
        .map(|address| listeners::bind_listener(address, config.listen_options()))
        .collect()
}
