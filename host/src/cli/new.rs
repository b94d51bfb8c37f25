//! `danube-host new`: a connector directory to start from.

use std::path::Path;
use std::process::ExitCode;

use crate::exit;
use crate::scaffold;

pub fn new(
    lang: scaffold::Lang,
    world: Option<scaffold::Kind>,
    name: &str,
    dir: &Path,
) -> ExitCode {
    match scaffold::create(lang, world, name, dir) {
        Ok(created) => {
            println!("created {}: see its README.md", created.display());
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("danube-host: {e:#}");
            ExitCode::from(exit::CONFIG)
        }
    }
}
