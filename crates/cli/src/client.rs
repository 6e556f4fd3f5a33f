//! `veil client`: SMART Backend Services clients of `veil serve`
//! (registered in the store), and the client side for calling any SMART
//! server (`keygen`, `token`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::Value as Json;
use veil_smart::{KeyKind, Scopes, SigningKey, TokenClient};
use veil_store::ClientRecord;

use crate::UsageError;

/// Register, list and remove the clients that may call `veil serve`; make
/// a key pair; get an access token.
///
/// A research team (or any backend service) gets access like this:
///
///   veil client keygen --out team-a.pem          # prints the public JWKS
///   veil client add --name "Team A" --jwks team-a.jwks.json --scope 'system/*.read'
///   veil client token --fhir-url http://127.0.0.1:8080 --client-id ID --key team-a.pem
///
/// The last prints an access token for curl's `-H "Authorization: Bearer …"`.
/// Tokens live five minutes; each needs a fresh signed assertion, which
/// `veil client token` (and Veil's own commands) make from the key.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Register a client; prints its client_id.
    Add(AddArgs),
    /// List the registered clients (never their keys).
    List(StoreArgs),
    /// Remove a client: its tokens stop working when they expire (at most 5 minutes).
    Remove(RemoveArgs),
    /// Make a key pair: the private key goes to a file, the public JWKS to stdout.
    Keygen(KeygenArgs),
    /// Get an access token from a SMART server with a registered key, and print it.
    Token(TokenArgs),
}

#[derive(clap::Args)]
struct StoreArgs {
    /// The store: sqlite:PATH or postgres://….
    #[arg(long, value_name = "URL", default_value = "sqlite:veil.db", env = "VEIL_DB")]
    db: String,
}

#[derive(clap::Args)]
struct AddArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A name for people ("Research team A").
    #[arg(long)]
    name: String,
    /// Its public keys: a JWK Set as a file, or inline JSON.
    #[arg(long, value_name = "FILE|JSON", conflicts_with = "jwks_url", required_unless_present = "jwks_url")]
    jwks: Option<String>,
    /// Where it publishes its public keys (fetched when needed, cached as its Cache-Control allows).
    #[arg(long, value_name = "URL")]
    jwks_url: Option<String>,
    /// The scopes it may be granted, space-separated (SMART v1 or v2).
    #[arg(long, value_name = "SCOPES", default_value = "system/*.read")]
    scope: String,
    /// The client_id to use, instead of a random one.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
}

#[derive(clap::Args)]
struct RemoveArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The client_id.
    id: String,
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, readable by you only).
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// The algorithm.
    #[arg(long, value_enum, default_value = "es384")]
    alg: Alg,
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Alg {
    Es384,
    Rs384,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The FHIR server's base URL (its .well-known/smart-configuration names the token endpoint).
    #[arg(long, value_name = "URL")]
    fhir_url: String,
    /// The client_id the server assigned.
    #[arg(long, value_name = "ID")]
    client_id: String,
    /// The private key: a PEM file, or a JSON file with a private JWK.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The scopes to ask for.
    #[arg(long, value_name = "SCOPES", default_value = "system/*.read")]
    scope: String,
    /// The key id registered for this key. Default: the JWK's own kid, or
    /// the key's RFC 7638 thumbprint (what `veil client keygen` registers).
    #[arg(long, value_name = "KID")]
    kid: Option<String>,
}

pub(crate) fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Add(a) => add(a),
        Command::List(a) => list(a),
        Command::Remove(a) => remove(a),
        Command::Keygen(a) => keygen(a),
        Command::Token(a) => token(a),
    }
}

fn open(store: &StoreArgs) -> Result<Box<dyn veil_store::Store>> {
    Ok(veil_store::open(&store.db)
        .map_err(|e| UsageError(format!("cannot open the store {}: {e}", veil_store::printable_url(&store.db))))?)
}

fn add(a: AddArgs) -> Result<ExitCode> {
    if Scopes::parse(&a.scope).map_err(|e| UsageError(format!("--scope: {}", e.description)))?.0.is_empty() {
        return Err(UsageError("--scope needs at least one system scope, such as system/*.read".into()).into());
    }
    let jwks = match &a.jwks {
        None => None,
        Some(text) => {
            let text = if text.trim_start().starts_with('{') {
                text.clone()
            } else {
                std::fs::read_to_string(text).map_err(|e| UsageError(format!("cannot read --jwks {text}: {e}")))?
            };
            Some(veil_smart::public_key_set(&text).map_err(|e| UsageError(format!("--jwks: {e}")))?)
        }
    };
    if let Some(url) = &a.jwks_url
        && !(url.starts_with("https://") || url.starts_with("http://127.0.0.1") || url.starts_with("http://localhost"))
    {
        return Err(UsageError("--jwks-url must be https (plain http only on loopback)".into()).into());
    }
    let record = ClientRecord {
        id: a.id.clone().unwrap_or_else(veil_server::new_id),
        name: a.name.clone(),
        jwks,
        jwks_url: a.jwks_url.clone(),
        scopes: a.scope.clone(),
        created: String::new(),
    };
    let store = open(&a.store)?;
    if store.client(&record.id)?.is_some() {
        return Err(UsageError(format!("a client with id {} is already registered", record.id)).into());
    }
    let saved = store.add_client(&record)?;
    println!("{}", saved.id);
    eprintln!("Registered '{}' as client_id {} with scopes {}.", saved.name, saved.id, saved.scopes);
    Ok(ExitCode::SUCCESS)
}

fn list(a: StoreArgs) -> Result<ExitCode> {
    let clients = open(&a)?.clients()?;
    if clients.is_empty() {
        eprintln!("No clients are registered: veil client add --help tells how.");
    }
    let mut out = std::io::stdout().lock();
    for c in clients {
        let keys = match (&c.jwks, &c.jwks_url) {
            (_, Some(url)) => format!("keys at {url}"),
            (Some(set), None) => {
                let n = serde_json::from_str::<Json>(set)
                    .ok()
                    .and_then(|s| s["keys"].as_array().map(Vec::len))
                    .unwrap_or(0);
                format!("{n} key(s) inline")
            }
            (None, None) => "no keys".into(),
        };
        writeln!(out, "{}\t{}\t{}\t{}\tregistered {}", c.id, c.name, c.scopes, keys, c.created)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(a: RemoveArgs) -> Result<ExitCode> {
    if !open(&a.store)?.remove_client(&a.id)? {
        return Err(UsageError(format!("no client {} is registered (veil client list shows them)", a.id)).into());
    }
    eprintln!("Removed client {}: it gets no new tokens; tokens already issued end within 5 minutes.", a.id);
    Ok(ExitCode::SUCCESS)
}

fn keygen(a: KeygenArgs) -> Result<ExitCode> {
    let kind = match a.alg {
        Alg::Es384 => KeyKind::Es384,
        Alg::Rs384 => KeyKind::Rs384,
    };
    let (key, pem) = SigningKey::generate(kind)?;
    write_private(&a.out, &pem)?;
    println!("{}", serde_json::to_string_pretty(&key.public_jwks())?);
    eprintln!(
        "Wrote the private key ({}, kid {}) to {}. Register the public JWKS above: veil client add --jwks FILE",
        key.algorithm(),
        key.kid(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` for a private key or secret: never over an existing file, and
/// readable by its owner only.
pub(crate) fn write_private(path: &std::path::Path, pem: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            UsageError(format!("{} exists: a key is never overwritten", path.display()))
        } else {
            UsageError(format!("cannot create {}: {e}", path.display()))
        }
    })?;
    file.write_all(pem.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Reads a private key file: PEM, or JSON holding a private JWK; `kid`
/// overrides the key's own.
pub(crate) fn read_key(path: &std::path::Path, kid: Option<&str>) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read the key {}: {e}", path.display())))?;
    let key = if text.trim_start().starts_with('{') {
        SigningKey::from_jwk(&text, kid)
    } else {
        SigningKey::from_pem(&text, kid)
    };
    Ok(key.map_err(|e| UsageError(format!("{}: {e}", path.display())))?)
}

fn token(a: TokenArgs) -> Result<ExitCode> {
    let key = read_key(&a.key, a.kid.as_deref())?;
    let client = TokenClient::new(&a.fhir_url, &a.client_id, key, &a.scope);
    let token = client.access_token()?;
    eprintln!("Granted: {} (valid for up to 5 minutes)", client.granted_scope()?);
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
