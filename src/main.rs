#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use upmirror::cli::Cli;
use upmirror::commands;
use upmirror::config::Config;
use upmirror::error::Exit;
use upmirror::output::Reporter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Reporter::new(cli.global.quiet, cli.global.verbose, cli.global.json);
    let result = Config::resolve(&cli.global, &cli.command.keys())
        .map_err(anyhow::Error::from)
        .and_then(|cfg| commands::run(cli.command, &cfg, out));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let exit = Exit::of(&err);
            if !(exit == Exit::Locked && cli.global.quiet) {
                eprintln!("upmirror: {}", upmirror::output::error_lines(&err, cli.global.verbose > 0));
                for line in upmirror::output::take_after_error() {
                    eprintln!("upmirror: {line}");
                }
            }
            ExitCode::from(exit.code() as u8)
        }
    }
}
