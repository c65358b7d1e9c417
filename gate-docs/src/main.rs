//! `gate-docs OUT`: writes what the package installs beside the binaries, all of it made from
//! the definitions the binaries themselves use, so none of it can drift from them:
//!
//! - `OUT/man/`: a page per command and subcommand (clap_mangen: gate-daemon(1), gate-web(1),
//!   gatectl(1), gatectl-client-add(1), ..., gate-client(1)) and the configs' pages,
//!   gate.toml(5) and gate-web.toml(5), from their references (gate_daemon::config_reference,
//!   gate_web::config_reference, held to the parsers by their tests);
//! - `OUT/etc/`: the example configs, gate.toml.example and gate-web.toml.example: the smallest
//!   config that runs, then every other key commented out at its default;
//! - `OUT/completions/{bash,zsh,fish}/`: clap_complete's scripts for each command.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap_complete::Shell;
use gate_config::reference::{ConfigKey, ConfigTable, sets, smallest_config};
use roff::{Roff, bold, italic, roman};

/// A config: its file, its page's one-line summary and its reference.
struct ConfigPage {
    file: &'static str,
    summary: &'static str,
    description: &'static str,
    /// The top-level keys every config needs, as TOML.
    top: &'static str,
    tables: &'static [ConfigTable],
    keys: &'static [ConfigKey],
    see_also: &'static str,
}

const CONFIGS: [ConfigPage; 2] = [
    ConfigPage {
        file: "gate.toml",
        summary: "configuration of the gate daemon",
        description: gate_daemon::config_reference::DESCRIPTION,
        top: gate_daemon::config_reference::TOP,
        tables: gate_daemon::config_reference::TABLES,
        keys: gate_daemon::config_reference::KEYS,
        see_also: "gate-daemon(1), gatectl(1), gate-web.toml(5)",
    },
    ConfigPage {
        file: "gate-web.toml",
        summary: "configuration of the gate's public web front",
        description: gate_web::config_reference::DESCRIPTION,
        top: gate_web::config_reference::TOP,
        tables: gate_web::config_reference::TABLES,
        keys: gate_web::config_reference::KEYS,
        see_also: "gate-web(1), gate-daemon(1), gate.toml(5)",
    },
];

fn commands() -> [clap::Command; 4] {
    [gate_daemon::cli::command(), gate_web::cli::command(), gatectl::command(), gate_client::cli::command()]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: gate-docs OUT_DIR");
    };
    let out = PathBuf::from(out);
    let man = out.join("man");
    let etc = out.join("etc");
    for dir in [&man, &etc] {
        fs::create_dir_all(dir).with_context(|| format!("make {}", dir.display()))?;
    }
    for command in commands() {
        let name = command.get_name().to_owned();
        clap_mangen::generate_to(command.clone(), &man).with_context(|| format!("man pages of {name}"))?;
        // Named as each shell looks them up in the directories the package installs them in.
        for (shell, file) in
            [(Shell::Bash, name.clone()), (Shell::Zsh, format!("_{name}")), (Shell::Fish, format!("{name}.fish"))]
        {
            let dir = out.join("completions").join(shell.to_string());
            fs::create_dir_all(&dir).with_context(|| format!("make {}", dir.display()))?;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command.clone(), &name, &mut script);
            fs::write(dir.join(&file), script).with_context(|| format!("write the {shell} completion of {name}"))?;
        }
    }
    for config in &CONFIGS {
        write(&man.join(format!("{}.5", config.file)), &config_page(config))?;
        write(&etc.join(format!("{}.example", config.file)), &example_config(config))?;
    }
    println!("wrote man pages, example configs and completions under {}", out.display());
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

/// The config's page, section 5.
fn config_page(config: &ConfigPage) -> String {
    let title = config.file.to_uppercase();
    let version = concat!("gate ", env!("CARGO_PKG_VERSION"));
    let mut page = Roff::new();
    page.control("TH", [title.as_str(), "5", "", version, "File Formats"])
        .control("SH", ["NAME"])
        .text([roman(format!("{} - {}", config.file, config.summary))])
        .control("SH", ["DESCRIPTION"])
        .text([roman(config.description)])
        .control("SH", ["EXAMPLE"])
        .text([roman("The smallest config that runs:")])
        .control("nf", [])
        .text([roman(smallest_config(config.top, config.tables).trim_end())])
        .control("fi", [])
        .control("SH", ["KEYS"]);
    let top: Vec<&ConfigKey> = config.keys.iter().filter(|k| k.table.is_empty()).collect();
    if !top.is_empty() {
        page.control("SS", ["Top level"]);
        keys_section(&mut page, &top);
    }
    for table in config.tables {
        page.control("SS", [table.header().as_str()]).text([roman(table.text)]);
        let keys: Vec<&ConfigKey> = config.keys.iter().filter(|k| k.table == table.name).collect();
        keys_section(&mut page, &keys);
    }
    page.control("SH", ["SEE ALSO"]).text([roman(config.see_also)]);
    page.render()
}

fn keys_section(page: &mut Roff, keys: &[&ConfigKey]) {
    for key in keys {
        let default = match key.default {
            Some(value) => format!("default: {value}"),
            None => "no default".to_owned(),
        };
        page.control("TP", []).text([bold(key.name), roman(" ("), italic(default), roman(")")]).text([roman(key.text)]);
    }
}

/// The example config: the smallest that runs, with every other key commented out at its
/// default (or "not set"), each under its text, in the table it belongs to.
fn example_config(config: &ConfigPage) -> String {
    let mut text = format!(
        "# {}: {}. See {}(5).\n# A key left out takes the value shown commented out.\n",
        config.file, config.summary, config.file
    );
    // `set`: the keys already written; `required`: those an entry must have.
    let commented = |text: &mut String, table: &str, set: &str, required: &str| {
        for key in config.keys.iter().filter(|k| k.table == table && !sets(set, k.name)) {
            for line in wrap(key.text, 92) {
                text.push_str(&format!("# {line}\n"));
            }
            let absent = if sets(required, key.name) { "(required)" } else { "(not set)" };
            text.push_str(&format!("#{} = {}\n", key.name, key.default.unwrap_or(absent)));
        }
    };
    text.push('\n');
    if !config.top.is_empty() {
        text.push_str(&format!("{}\n", config.top.trim_end()));
    }
    commented(&mut text, "", config.top, config.top);
    for table in config.tables {
        text.push('\n');
        if table.array && table.required {
            text.push_str(&table.minimal_entry());
            commented(&mut text, table.name, table.minimal, table.minimal);
        } else {
            for line in wrap(table.text, 92) {
                text.push_str(&format!("# {line}\n"));
            }
            text.push_str(&format!("#{}\n", table.header()));
            commented(&mut text, table.name, "", table.minimal);
        }
    }
    text
}

/// `text` in lines of at most `width` characters, broken between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}
