//! edge-mes-nats-admin: one NATS identity per edge box.
//!
//! Every edge box logs in with its own user nkey. The server lists the public keys in account
//! `BOXES` (file `boxes.inc` beside nats/production/nats-server.conf and leafnode-site.conf), each
//! allowed to publish only `edge.readings.<its site>.<its box>` and to read only its own replies
//! (`_INBOX.<its public key>.>`); the account reaches the `READINGS` stream through one service
//! import and sees nothing else. The seed stays with the box (edge-shipper `--nats-nkey-file`).
//!
//! - [`box_identity`]: the key pair and the box's line.
//! - [`boxes_file`]: adding and removing lines in the boxes file.
//!
//! `add-box` issues a key, writes the seed (a new file, mode 0600), prints the line and, with
//! `--boxes-file`, adds it there; `remove-box` revokes a box. After either, reload the servers
//! (`nats-server --signal reload`).

pub mod box_identity;
pub mod boxes_file;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use thiserror::Error;

use crate::box_identity::BoxId;

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("--site and --box-id must not be empty")]
    EmptyId,
    #[error("cannot generate a key: {0}")]
    KeyGeneration(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} exists: a seed file is never overwritten (a new key goes to a new file; with \
         --replace its line replaces the old one)"
    )]
    SeedFileExists { path: String },
    #[error("{label} is already listed (line {lines:?}); --replace issues it a new key")]
    AlreadyListed { label: String, lines: Vec<usize> },
    #[error("{label} is not listed")]
    NotListed { label: String },
    #[error("no `users: [` ... `]` list found in the boxes file")]
    NoUsersList,
}

/// Issues and revokes the NATS identities of edge boxes.
#[derive(Debug, Parser)]
#[command(name = "edge-mes-nats-admin", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Issue a new box's identity: a user nkey whose seed goes to --seed-file and whose line
    /// (for account BOXES of the server's boxes file, or of the Helm values) is printed and,
    /// with --boxes-file, added there.
    AddBox(AddBox),
    /// Revoke a box: remove its line from the boxes file.
    RemoveBox(RemoveBox),
}

/// The box, named as its edge-shipper names itself.
#[derive(Debug, Args)]
pub struct BoxArgs {
    /// Site id of the box (its edge-shipper's --site).
    #[arg(long, env = "EDGE_SITE")]
    pub site: String,

    /// Box id (its edge-shipper's --box-id).
    #[arg(long, env = "EDGE_BOX_ID")]
    pub box_id: String,
}

#[derive(Debug, Args)]
pub struct AddBox {
    #[command(flatten)]
    pub id: BoxArgs,

    /// Where to write the box's nkey seed, its secret: a new file, mode 0600. Copy it to the box
    /// (edge-shipper --nats-nkey-file) and delete it here.
    #[arg(long, env = "NATS_NKEY_FILE")]
    pub seed_file: PathBuf,

    /// The servers' boxes file (nats/production/boxes.inc) to add the box's line to; without it
    /// the line is only printed.
    #[arg(long, env = "NATS_BOXES_FILE")]
    pub boxes_file: Option<PathBuf>,

    /// Replace the box's line already in --boxes-file: key rotation (the old key stops working
    /// at the servers' reload).
    #[arg(long, env = "NATS_BOXES_REPLACE", requires = "boxes_file")]
    pub replace: bool,
}

#[derive(Debug, Args)]
pub struct RemoveBox {
    #[command(flatten)]
    pub id: BoxArgs,

    /// The servers' boxes file (nats/production/boxes.inc).
    #[arg(long, env = "NATS_BOXES_FILE")]
    pub boxes_file: PathBuf,
}

/// What a command did: the line for a server config (standard output) and what to do next
/// (standard error).
#[derive(Debug)]
pub struct Done {
    pub entry: Option<String>,
    pub guidance: String,
}

pub fn run(cli: &Cli) -> Result<Done, AdminError> {
    match &cli.command {
        Command::AddBox(a) => add_box(a),
        Command::RemoveBox(r) => remove_box(r),
    }
}

fn add_box(a: &AddBox) -> Result<Done, AdminError> {
    let id = BoxId::new(&a.id.site, &a.id.box_id)?;
    let issued = box_identity::issue()?;
    let entry = box_identity::entry(&id, &issued.public_key, chrono::Utc::now());
    // The boxes file is checked before anything is written, so a refusal leaves no seed behind.
    let updated = match &a.boxes_file {
        Some(path) => Some(boxes_file::add(&read(path)?, &id, &entry, a.replace)?),
        None => None,
    };
    write_seed(&a.seed_file, &issued.seed)?;
    let listed = match (&a.boxes_file, updated) {
        (Some(path), Some(text)) => {
            boxes_file::write_atomically(path, &text)?;
            format!("added its line to {}", path.display())
        }
        _ => "add the line printed above to the users list of account BOXES (boxes.inc beside \
              the server config, or config.merge.accounts.BOXES.users of the Helm values, as a \
              list item `- ...`)"
            .to_owned(),
    };
    let guidance = format!(
        "issued {label}: public key {key}; seed written to {seed} (mode 0600)\n\
         {listed}\n\
         next:\n  \
         1. reload every server that lists this box (the central servers, or the site gateway \
         the box publishes to): nats-server --signal reload\n  \
         2. on the box: the seed as /etc/edge-mes/nats.nk (root, mode 0600), and \
         EDGE_SITE={site:?} EDGE_BOX_ID={box_id:?} in /etc/edge-mes/edge-shipper.env \
         (deploy/edge/README.md); then delete {seed} here\n\
         the box may publish {subject} and nothing else",
        label = id.label(),
        key = issued.public_key,
        seed = a.seed_file.display(),
        site = a.id.site,
        box_id = a.id.box_id,
        subject = id.subject(),
    );
    Ok(Done {
        entry: Some(entry),
        guidance,
    })
}

fn remove_box(r: &RemoveBox) -> Result<Done, AdminError> {
    let id = BoxId::new(&r.id.site, &r.id.box_id)?;
    let text = boxes_file::remove(&read(&r.boxes_file)?, &id)?;
    boxes_file::write_atomically(&r.boxes_file, &text)?;
    Ok(Done {
        entry: None,
        guidance: format!(
            "removed {} from {}; once the servers reloaded (nats-server --signal reload) it \
             can neither log in nor publish on a connection it still has",
            id.label(),
            r.boxes_file.display()
        ),
    })
}

fn read(path: &Path) -> Result<String, AdminError> {
    std::fs::read_to_string(path).map_err(|source| AdminError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes the seed to a new file readable by its owner only; an existing file is an error.
fn write_seed(path: &Path, seed: &str) -> Result<(), AdminError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            AdminError::SeedFileExists {
                path: path.display().to_string(),
            }
        } else {
            AdminError::Io {
                path: path.display().to_string(),
                source,
            }
        }
    })?;
    file.write_all(format!("{seed}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| AdminError::Io {
            path: path.display().to_string(),
            source,
        })
}
