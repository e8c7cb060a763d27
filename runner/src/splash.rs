//! The banner, shown only on an interactive terminal and never with `--no-splash`.

use std::io::{IsTerminal, Write};

const BANNER: &str = "
  ┌─┐┬ ┬┬┌┬┐┌─┐┬ ┬┌┐ ┌─┐┌─┐┬─┐┌┬┐
  └─┐││││ │ │  ├─┤├┴┐│ │├─┤├┬┘ ││
  └─┘└┴┘┴ ┴ └─┘┴ ┴└─┘└─┘┴ ┴┴└──┴┘";

/// Prints the banner and `line` when stdout is a terminal and the splash is not disabled.
pub(crate) fn show(disabled: bool, line: &str) {
    let mut out = std::io::stdout();
    if disabled || !out.is_terminal() {
        return;
    }
    let _ = writeln!(out, "{BANNER}\n  {line}\n");
}
