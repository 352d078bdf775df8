#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use upmirror::cli::Cli;
use upmirror::config::Config;
use upmirror::output::Reporter;
use upmirror::{commands, exit_code};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Reporter::new(cli.global.quiet, cli.global.verbose, cli.global.json);
    let result =
        Config::resolve(&cli.global).map_err(anyhow::Error::from).and_then(|cfg| commands::run(cli.command, &cfg, out));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit_code(&err);
            if !(code == 75 && cli.global.quiet) {
                eprintln!("upmirror: {}", format!("{err:#}").replace('\n', " "));
            }
            ExitCode::from(code as u8)
        }
    }
}
