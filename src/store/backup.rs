//! The backup format (SPEC §12) and the sled side of backup and restore.
//!
//! The record layer ([`Record`]) is the backend-neutral form of everything the store keeps:
//! a backend writes each record where it belongs, so a PostgreSQL store restores the same
//! file. JSON Lines: a [`Header`], one record per line, a [`Trailer`] whose `sha256` is the
//! hex SHA-256 of every byte before it (each line with its `\n`).
//!
//! What is in a record is the store's own record type as JSON (decimals as strings), plus the
//! key parts the record does not carry itself (a rate's or a log's realm). Tokens are only the
//! store's age ciphertext (base64). Pending OAuth states and invite links are capabilities
//! (their key is the secret), so each is sealed whole to the store's age recipient. Meta
//! values are the stored bytes (base64; the one secret among them, the generated
//! `SECRET_KEY`, is already age ciphertext). Log and scrape ids are not kept: a restore
//! numbers them afresh in file order, which is their order.
//!
//! Version 1 is read by every later build: a change of a record adds a version and a
//! conversion here, never a silent reinterpretation.

use std::collections::BTreeMap;
use std::io::BufRead;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::records::{Company, CompanyRate, LogRecord, PendingAuth, ScrapeRecord, StoredTable};
use super::snapshot::TreeId;
use super::{codec, keys, Error, Result, SledStore, SCHEMA_VERSION};
use crate::crypto::Vault;

/// The header's `format`.
pub const FORMAT: &str = "boa-exchange-backup";
/// The format version this build writes (and the newest it reads).
pub const VERSION: u32 = 1;
/// Longest line a reader accepts (a company's record is well under 4 KiB; a fixing table
/// with every revision a few tens).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Meta keys the store owns itself: written by the target at open, never copied.
pub(crate) const OWN_META: [&str; 2] = ["schema_version", "vault_recipient"];

/// Line 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// The format version.
    pub version: u32,
    /// The backup's instant.
    pub created_at: DateTime<Utc>,
    /// The daemon that wrote it.
    pub daemon_version: String,
    /// The store schema the records are in.
    pub schema_version: u32,
    /// The age recipient the tokens are encrypted to (the identity is never in a backup).
    pub identity_recipient: String,
    /// `sled` or `postgres`.
    pub backend: String,
}

impl Header {
    /// The header this daemon writes for a backup of `backend` taken at `now`.
    pub(crate) fn ours(now: DateTime<Utc>, identity_recipient: String, backend: &str) -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            created_at: now,
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            schema_version: SCHEMA_VERSION,
            identity_recipient,
            backend: backend.into(),
        }
    }
}

/// The last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// Always true.
    pub end: bool,
    /// Records between header and trailer.
    pub records: u64,
    /// Hex SHA-256 of every byte before the trailer line.
    pub sha256: String,
}

/// One record, named by its `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A company.
    Company {
        /// The record.
        company: Company,
    },
    /// A company's tokens, as the store's age ciphertext (base64).
    Tokens {
        /// Realm id.
        realm: String,
        /// base64 of the ciphertext.
        ciphertext: String,
    },
    /// A company's rate for a date and currency.
    Rate {
        /// Realm id.
        realm: String,
        /// The row.
        rate: CompanyRate,
    },
    /// An entry of a company's log.
    Log {
        /// Realm id.
        realm: String,
        /// The entry.
        log: LogRecord,
    },
    /// A stored BoA table with its revisions.
    Fixing {
        /// The table.
        table: StoredTable,
    },
    /// An entry of the global scrape log.
    Scrape {
        /// The entry.
        scrape: ScrapeRecord,
    },
    /// An unused invite link, sealed (see the module docs).
    Invite {
        /// base64 of the age ciphertext of `{"key", "pending"}`.
        sealed: String,
    },
    /// A pending OAuth state, sealed.
    OauthState {
        /// base64 of the age ciphertext of `{"key", "pending"}`.
        sealed: String,
    },
    /// A daemon-wide value (last runs, holidays, the encrypted `SECRET_KEY`).
    Meta {
        /// Its name.
        key: String,
        /// base64 of the stored bytes.
        value: String,
    },
}

/// The kinds version 1 has, in file order.
pub const KINDS: [&str; 9] = [
    "company",
    "tokens",
    "rate",
    "log",
    "fixing",
    "scrape",
    "invite",
    "oauth_state",
    "meta",
];

impl Record {
    /// Its `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Company { .. } => "company",
            Record::Tokens { .. } => "tokens",
            Record::Rate { .. } => "rate",
            Record::Log { .. } => "log",
            Record::Fixing { .. } => "fixing",
            Record::Scrape { .. } => "scrape",
            Record::Invite { .. } => "invite",
            Record::OauthState { .. } => "oauth_state",
            Record::Meta { .. } => "meta",
        }
    }
}

/// What a sealed pending entry holds.
#[derive(Serialize, Deserialize)]
pub(crate) struct SealedPending {
    pub(crate) key: String,
    pub(crate) pending: PendingAuth,
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(s: &str, what: &str) -> std::result::Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("{what} is not base64: {e}"))
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// Records (header and trailer not counted).
    pub records: u64,
    /// The trailer's sha256.
    pub sha256: String,
    /// Stored records that did not decode, left out (and logged).
    pub skipped: u64,
}

/// Hashes and counts lines as they are written.
struct LineSink<F> {
    emit: F,
    hash: Sha256,
}

impl<F: FnMut(Vec<u8>) -> bool> LineSink<F> {
    fn line(&mut self, value: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_vec(value).map_err(|e| Error::Backup(e.to_string()))?;
        line.push(b'\n');
        self.hash.update(&line);
        if (self.emit)(line) {
            Ok(())
        } else {
            Err(Error::BackupAborted)
        }
    }
}

/// Ends the running backup however the walk ends.
struct EndGuard<'a>(&'a SledStore);

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        self.0.snaps.end();
    }
}

impl SledStore {
    /// Writes a consistent copy of the whole store as backup lines (each with its `\n`) to
    /// `emit`, which returns false to stop (its reader went away). Blocking: run it on a
    /// blocking thread. Writers go on meanwhile (see [`super::snapshot`]); memory does not grow
    /// with the store.
    ///
    /// # Errors
    /// [`Error::BackupRunning`] while another runs; [`Error::BackupAborted`] when `emit`
    /// stops; sled failure.
    pub fn backup(&self, now: DateTime<Utc>, emit: impl FnMut(Vec<u8>) -> bool) -> Result<Written> {
        self.snaps.begin().map_err(|_| Error::BackupRunning)?;
        let _end = EndGuard(self);
        let mut sink = LineSink {
            emit,
            hash: Sha256::new(),
        };
        sink.line(&Header::ours(now, self.vault.recipient(), "sled"))?;
        let trees = TreeId::ALL.map(|id| self.tree(id));
        let (mut records, mut skipped) = (0u64, 0u64);
        loop {
            let batch = self.snaps.next_batch(&trees, 256)?;
            if batch.is_empty() {
                break;
            }
            for (id, key, value) in batch {
                match self.to_record(id, &key, &value) {
                    Ok(Some(rec)) => {
                        sink.line(&rec)?;
                        records += 1;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        skipped += 1;
                        tracing::warn!(tree = id.name(), key = %String::from_utf8_lossy(&key), error = %e, "backup: undecodable record left out");
                    }
                }
            }
        }
        let sha256 = hex::encode(sink.hash.clone().finalize());
        sink.line(&Trailer {
            end: true,
            records,
            sha256: sha256.clone(),
        })?;
        Ok(Written {
            records,
            sha256,
            skipped,
        })
    }

    /// The record of one stored entry; `None` for what is not copied.
    fn to_record(
        &self,
        id: TreeId,
        key: &[u8],
        value: &[u8],
    ) -> std::result::Result<Option<Record>, String> {
        let text =
            |k: &[u8]| String::from_utf8(k.to_vec()).map_err(|_| "key is not UTF-8".to_string());
        let realm_of = |k: &[u8]| -> std::result::Result<String, String> {
            let end = k.iter().position(|&b| b == 0).ok_or("key has no realm")?;
            text(&k[..end])
        };
        let dec = |e: codec::CodecError| e.to_string();
        Ok(Some(match id {
            TreeId::Companies => Record::Company {
                company: codec::decode(value).map_err(dec)?,
            },
            TreeId::Tokens => Record::Tokens {
                realm: text(key)?,
                ciphertext: b64(value),
            },
            TreeId::Rates => Record::Rate {
                realm: realm_of(key)?,
                rate: codec::decode(value).map_err(dec)?,
            },
            TreeId::Logs => Record::Log {
                realm: realm_of(key)?,
                log: codec::decode(value).map_err(dec)?,
            },
            TreeId::Fixings => Record::Fixing {
                table: codec::decode(value).map_err(dec)?,
            },
            TreeId::Scrapes => Record::Scrape {
                scrape: codec::decode(value).map_err(dec)?,
            },
            TreeId::OauthStates => {
                let pending: PendingAuth = codec::decode(value).map_err(dec)?;
                let invite = matches!(pending, PendingAuth::Invite { .. });
                let plain = serde_json::to_vec(&SealedPending {
                    key: text(key)?,
                    pending,
                })
                .map_err(|e| e.to_string())?;
                let sealed = b64(&self.vault.encrypt(&plain).map_err(|e| e.to_string())?);
                if invite {
                    Record::Invite { sealed }
                } else {
                    Record::OauthState { sealed }
                }
            }
            TreeId::Meta => {
                let key = text(key)?;
                if OWN_META.contains(&key.as_str()) {
                    return Ok(None);
                }
                Record::Meta {
                    key,
                    value: b64(value),
                }
            }
        }))
    }

    /// How many entries the store holds (its own meta keys not counted): a restore goes
    /// only into a store where this is 0.
    ///
    /// # Errors
    /// sled failure.
    pub fn entries(&self) -> Result<u64> {
        let mut n = 0u64;
        for id in TreeId::ALL {
            if id == TreeId::Meta {
                for r in self.meta.iter() {
                    let (k, _) = r?;
                    if !OWN_META.iter().any(|m| m.as_bytes() == &k[..]) {
                        n += 1;
                    }
                }
            } else {
                n += self.tree(id).len() as u64;
            }
        }
        Ok(n)
    }

    /// Writes one restored record where it belongs (not flushed; the restore flushes at the
    /// end). The record was checked by [`check_record`] first.
    ///
    /// # Errors
    /// A record that does not convert, sled failure.
    pub fn restore_record(&self, rec: &Record) -> Result<()> {
        let bad = |e: String| Error::Backup(e);
        let w = self.writer();
        let enc = |name: &'static str| Error::codec(name);
        match rec {
            Record::Company { company } => {
                let bytes = codec::encode(company).map_err(enc(keys::COMPANIES))?;
                let key = company.realm_id.as_bytes();
                self.write_company(&w, key, Some(company), |w| {
                    w.insert(TreeId::Companies, key, bytes)
                })?;
            }
            Record::Tokens { realm, ciphertext } => {
                let ct = unb64(ciphertext, "ciphertext").map_err(bad)?;
                w.insert(TreeId::Tokens, realm.as_bytes(), ct)?;
            }
            Record::Rate { realm, rate } => {
                let bytes = codec::encode(rate).map_err(enc(keys::RATES))?;
                w.insert(
                    TreeId::Rates,
                    &keys::rate_key(realm, rate.date, rate.currency),
                    bytes,
                )?;
            }
            Record::Log { realm, log } => {
                let bytes = codec::encode(log).map_err(enc(keys::LOGS))?;
                let id = self.db.generate_id()?;
                w.insert(TreeId::Logs, &keys::log_key(realm, id), bytes)?;
            }
            Record::Fixing { table } => {
                let bytes = codec::encode(table).map_err(enc(keys::FIXINGS))?;
                let key = keys::fixing_key(table.table.kind, table.table.date);
                w.insert(TreeId::Fixings, &key, bytes)?;
            }
            Record::Scrape { scrape } => {
                let bytes = codec::encode(scrape).map_err(enc(keys::SCRAPES))?;
                let id = self.db.generate_id()?;
                w.insert(TreeId::Scrapes, &id.to_be_bytes(), bytes)?;
            }
            Record::Invite { sealed } | Record::OauthState { sealed } => {
                let p = unseal(&self.vault, sealed).map_err(bad)?;
                let bytes = codec::encode(&p.pending).map_err(enc(keys::OAUTH_STATES))?;
                w.insert(TreeId::OauthStates, p.key.as_bytes(), bytes)?;
            }
            Record::Meta { key, value } => {
                let v = unb64(value, "value").map_err(bad)?;
                w.insert(TreeId::Meta, key.as_bytes(), v)?;
            }
        }
        Ok(())
    }
}

pub(crate) fn unseal(vault: &Vault, sealed: &str) -> std::result::Result<SealedPending, String> {
    let ct = unb64(sealed, "sealed")?;
    let plain = vault
        .decrypt(&ct)
        .map_err(|e| format!("sealed entry does not decrypt with this identity: {e}"))?;
    serde_json::from_slice(&plain).map_err(|e| format!("sealed entry: {e}"))
}

/// Checks what a record needs beyond its JSON shape: base64 that decodes, an age ciphertext
/// where one belongs, sealed entries that open with `vault`, meta keys the store does not
/// own, realm ids that are realm ids.
///
/// # Errors
/// Why the record cannot be restored.
pub fn check_record(vault: &Vault, rec: &Record) -> std::result::Result<(), String> {
    let realm_ok = |r: &str| {
        if !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(())
        } else {
            Err(format!("realm id {r:?} is not a realm id"))
        }
    };
    match rec {
        Record::Company { company } => realm_ok(&company.realm_id),
        Record::Rate { realm, .. } | Record::Log { realm, .. } => realm_ok(realm),
        Record::Tokens { realm, ciphertext } => {
            realm_ok(realm)?;
            let ct = unb64(ciphertext, "ciphertext")?;
            if ct.starts_with(b"age-encryption.org/v1\n") {
                Ok(())
            } else {
                Err("ciphertext is not an age file".into())
            }
        }
        Record::Invite { sealed } | Record::OauthState { sealed } => {
            unseal(vault, sealed).map(|_| ())
        }
        Record::Meta { key, value } => {
            if OWN_META.contains(&key.as_str()) {
                return Err(format!("meta key {key:?} belongs to the target store"));
            }
            unb64(value, "value").map(|_| ())
        }
        Record::Fixing { .. } | Record::Scrape { .. } => Ok(()),
    }
}

/// Why a backup file cannot be restored: the line (1-based) when one is to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct ReadError {
    /// The line.
    pub line: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

impl ReadError {
    fn at(line: u64, reason: impl Into<String>) -> Self {
        ReadError {
            line: Some(line),
            reason: reason.into(),
        }
    }
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    /// Line 1.
    pub header: Header,
    /// Records per kind (every kind of [`KINDS`], zeros included).
    pub counts: BTreeMap<&'static str, u64>,
    /// All records.
    pub records: u64,
    /// The trailer's sha256.
    pub sha256: String,
}

/// Checks a backup line by line as it arrives (a file being read, a stream being
/// received): the header (format, a version this build reads), every line (JSON of a known
/// kind), and the trailer (present, last, its count and sha256 those of the lines before it).
/// `each` sees every record in order and may refuse one (its message is reported with the
/// line).
pub struct Verifier<F> {
    each: F,
    hash: Sha256,
    line: u64,
    header: Option<Header>,
    counts: BTreeMap<&'static str, u64>,
    records: u64,
    done: Option<Contents>,
}

impl<F: FnMut(Record) -> std::result::Result<(), String>> Verifier<F> {
    /// A verifier that hands each record to `each`.
    pub fn new(each: F) -> Self {
        Verifier {
            each,
            hash: Sha256::new(),
            line: 0,
            header: None,
            counts: KINDS.iter().map(|k| (*k, 0)).collect(),
            records: 0,
            done: None,
        }
    }

    /// The header, once line 1 was checked.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// True once the trailer was checked.
    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    /// Checks the next line (with its `\n`).
    ///
    /// # Errors
    /// What is wrong with it, with its number.
    pub fn line(&mut self, buf: &[u8]) -> std::result::Result<(), ReadError> {
        self.line += 1;
        let n = self.line;
        if self.done.is_some() {
            return Err(ReadError::at(n, "data after the trailer"));
        }
        if buf.len() > MAX_LINE {
            return Err(ReadError::at(
                n,
                format!("line longer than {MAX_LINE} bytes"),
            ));
        }
        if !buf.ends_with(b"\n") {
            return Err(ReadError::at(n, "the last line is cut off: truncated"));
        }
        let Some(_) = &self.header else {
            self.header = Some(parse_header(buf).map_err(|e| ReadError::at(n, e))?);
            self.hash.update(buf);
            return Ok(());
        };
        let value: serde_json::Value = serde_json::from_slice(buf)
            .map_err(|e| ReadError::at(n, format!("not a JSON record: {e}")))?;
        if value.get("end").is_some() {
            return self.trailer(value);
        }
        let kind = value
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| ReadError::at(n, "a record without a \"kind\""))?;
        let Some(known) = KINDS.iter().find(|k| **k == kind) else {
            return Err(ReadError::at(n, format!("record kind {kind:?} is not one this version knows (written by a newer boa-exchange?)")));
        };
        let rec: Record = serde_json::from_value(value)
            .map_err(|e| ReadError::at(n, format!("bad {known} record: {e}")))?;
        (self.each)(rec).map_err(|e| ReadError::at(n, format!("bad {known} record: {e}")))?;
        *self.counts.entry(known).or_default() += 1;
        self.records += 1;
        self.hash.update(buf);
        Ok(())
    }

    fn trailer(&mut self, value: serde_json::Value) -> std::result::Result<(), ReadError> {
        let n = self.line;
        let t: Trailer = serde_json::from_value(value)
            .map_err(|e| ReadError::at(n, format!("not a trailer: {e}")))?;
        let sha = hex::encode(self.hash.clone().finalize());
        let records = self.records;
        if !t.end {
            return Err(ReadError::at(n, "trailer with \"end\": false"));
        }
        if t.records != records {
            return Err(ReadError::at(n, format!("the trailer counts {} records, the file has {records}: records are missing or added", t.records)));
        }
        if t.sha256 != sha {
            return Err(ReadError::at(n, format!("sha256 mismatch: the trailer says {}, the lines before it hash to {sha}: the file was changed or damaged", t.sha256)));
        }
        let header = self
            .header
            .clone()
            .ok_or_else(|| ReadError::at(n, "no header"))?;
        self.done = Some(Contents {
            header,
            counts: self.counts.clone(),
            records,
            sha256: sha,
        });
        Ok(())
    }

    /// The end of the input: what was read, when the trailer was checked.
    ///
    /// # Errors
    /// An empty or truncated input.
    pub fn finish(self) -> std::result::Result<Contents, ReadError> {
        if let Some(c) = self.done {
            return Ok(c);
        }
        let next = self.line + 1;
        if self.header.is_none() {
            return Err(ReadError::at(1, "the file is empty (no header)"));
        }
        Err(ReadError::at(
            next,
            format!(
                "the file ends after {} records without its trailer: truncated",
                self.records
            ),
        ))
    }
}

/// Reads a whole backup from `input` through a [`Verifier`].
///
/// # Errors
/// The first problem found, with its line.
pub fn read(
    mut input: impl BufRead,
    each: impl FnMut(Record) -> std::result::Result<(), String>,
) -> std::result::Result<Contents, ReadError> {
    let mut v = Verifier::new(each);
    let mut buf = Vec::new();
    let mut n = 0;
    while next_line(&mut input, &mut buf, &mut n)? {
        v.line(&buf)?;
    }
    v.finish()
}

/// Line 1 of a backup, checked (to learn its identity before reading it all).
///
/// # Errors
/// An empty input or a header that is not one this build reads.
pub fn read_header(mut input: impl BufRead) -> std::result::Result<Header, ReadError> {
    let (mut buf, mut n) = (Vec::new(), 0);
    if !next_line(&mut input, &mut buf, &mut n)? {
        return Err(ReadError::at(1, "the file is empty (no header)"));
    }
    parse_header(&buf).map_err(|e| ReadError::at(1, e))
}

/// Reads line `n + 1` into `buf` (with its `\n`); false at the end of the input.
fn next_line(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    n: &mut u64,
) -> std::result::Result<bool, ReadError> {
    use std::io::Read as _;
    buf.clear();
    *n += 1;
    let got = input
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|e| ReadError::at(*n, format!("cannot read: {e}")))?;
    if got > MAX_LINE {
        return Err(ReadError::at(
            *n,
            format!("line longer than {MAX_LINE} bytes"),
        ));
    }
    Ok(got > 0)
}

fn parse_header(line: &[u8]) -> std::result::Result<Header, String> {
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| format!("not a boa-exchange backup (the header is not JSON: {e})"))?;
    if value.get("format").and_then(serde_json::Value::as_str) != Some(FORMAT) {
        return Err(format!(
            "not a boa-exchange backup (no \"format\": \"{FORMAT}\" header)"
        ));
    }
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    match version {
        Some(v) if v >= 1 && v <= u64::from(VERSION) => {}
        Some(v) => {
            return Err(format!(
                "backup format version {v}: this boa-exchange reads versions 1 to {VERSION} (upgrade it)"
            ))
        }
        None => return Err("the header has no version".into()),
    }
    let header: Header = serde_json::from_value(value).map_err(|e| format!("bad header: {e}"))?;
    if header.schema_version > SCHEMA_VERSION {
        return Err(format!(
            "the records are in store schema {}, newer than this boa-exchange ({SCHEMA_VERSION}): upgrade it",
            header.schema_version
        ));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixing::{FixingSource, FixingTable, PublishedRate, TableKind};
    use crate::store::records::LogKind;
    use crate::store::tests::{company, tokens};
    use chrono::NaiveDate;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn rate(date: &str, eur: &str) -> CompanyRate {
        CompanyRate {
            date: d(date),
            currency: crate::currency::Currency::new("EUR").unwrap(),
            rate: Decimal::from_str(eur).unwrap(),
            fixing: (TableKind::Main, d(date)),
            synced: true,
            synced_at: Some(Utc::now()),
        }
    }

    fn log(msg: &str) -> LogRecord {
        LogRecord::connection(Utc::now(), true, msg, vec!["tid-1".into()])
    }

    /// Two stores sharing one identity, the first filled.
    fn stores() -> (tempfile::TempDir, SledStore, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("identity.txt");
        let a = SledStore::open(&dir.path().join("a"), &id).unwrap();
        let b = SledStore::open(&dir.path().join("b"), &id).unwrap();
        for realm in ["1", "2"] {
            let c = company(realm);
            a.insert_company(&a.writer(), &c).unwrap();
            a.put_tokens_unflushed(realm, &tokens(&format!("RT-secret-{realm}")))
                .unwrap();
            a.put_rates(
                realm,
                &[rate("2026-05-22", "100.5"), rate("2026-05-25", "101.25")],
            )
            .unwrap();
            a.append_log(realm, &log(&format!("first {realm}")))
                .unwrap();
            a.append_log(realm, &log(&format!("second {realm}")))
                .unwrap();
        }
        let table = FixingTable {
            kind: TableKind::Main,
            date: d("2026-05-22"),
            published_time: chrono::NaiveTime::from_hms_opt(12, 12, 23),
            rates: vec![PublishedRate {
                code: crate::currency::Currency::new("EUR").unwrap(),
                units: 1,
                published: Decimal::from_str("100.5").unwrap(),
            }],
        };
        let source = FixingSource::Page {
            url: "http://boa/".into(),
            sha256: "ab".into(),
            fetched_at: Utc::now(),
        };
        a.put_table(&table, &source, Utc::now()).unwrap();
        a.append_scrape(&ScrapeRecord {
            at: Utc::now(),
            url: "http://boa/".into(),
            success: true,
            fixing_dates: vec![(TableKind::Main, d("2026-05-22"))],
            outcome: "new".into(),
        })
        .unwrap();
        let later = Utc::now() + chrono::Duration::hours(1);
        a.put(
            TreeId::OauthStates,
            b"invite-code-secret",
            &PendingAuth::Invite {
                created_at: Utc::now(),
                expires_at: later,
            },
        )
        .unwrap();
        a.put(
            TreeId::OauthStates,
            b"state-secret",
            &PendingAuth::State {
                created_at: Utc::now(),
                expires_at: later,
                browser_nonce: "nonce-secret".into(),
            },
        )
        .unwrap();
        a.meta_put("holidays", &vec![d("2026-01-01")]).unwrap();
        (dir, a, b)
    }

    fn backup_of(s: &SledStore, mut during: impl FnMut(&[u8])) -> Vec<u8> {
        let mut out = Vec::new();
        s.backup(Utc::now(), |line| {
            during(&line);
            out.extend_from_slice(&line);
            true
        })
        .unwrap();
        out
    }

    fn restore(into: &SledStore, file: &[u8]) -> Contents {
        let vault = &into.vault;
        read(file, |r| check_record(vault, &r)).unwrap();
        let c = read(file, |r| into.restore_record(&r).map_err(|e| e.to_string())).unwrap();
        into.flush_blocking().unwrap();
        c
    }

    #[test]
    fn a_backup_restores_everything_without_a_plaintext_secret() {
        let (_dir, a, b) = stores();
        let file = backup_of(&a, |_| {});
        let text = String::from_utf8(file.clone()).unwrap();
        for secret in [
            "RT-secret-1",
            "AT-plain-123",
            "invite-code-secret",
            "state-secret",
            "nonce-secret",
        ] {
            assert!(!text.contains(secret), "{secret} in the backup");
        }
        assert_eq!(b.entries().unwrap(), 0);
        let c = restore(&b, &file);
        assert_eq!(c.header.identity_recipient, a.vault.recipient());
        assert_eq!(c.counts["company"], 2);
        assert_eq!(c.counts["tokens"], 2);
        assert_eq!(c.counts["rate"], 4);
        assert_eq!(c.counts["log"], 4);
        assert_eq!(c.counts["fixing"], 1);
        assert_eq!(c.counts["scrape"], 1);
        assert_eq!(c.counts["invite"], 1);
        assert_eq!(c.counts["oauth_state"], 1);
        assert_eq!(c.counts["meta"], 1);
        assert_eq!(c.records, 17);
        assert_eq!(a.entries().unwrap(), b.entries().unwrap());
        assert_eq!(a.companies().unwrap(), b.companies().unwrap());
        for realm in ["1", "2"] {
            assert_eq!(a.tokens(realm).unwrap(), b.tokens(realm).unwrap());
            assert_eq!(
                a.rates_between(realm, d("2026-01-01"), d("2026-12-31"))
                    .unwrap(),
                b.rates_between(realm, d("2026-01-01"), d("2026-12-31"))
                    .unwrap()
            );
            assert_eq!(a.logs(realm, 10).unwrap(), b.logs(realm, 10).unwrap());
        }
        assert_eq!(
            a.table(TableKind::Main, d("2026-05-22")).unwrap(),
            b.table(TableKind::Main, d("2026-05-22")).unwrap()
        );
        assert_eq!(a.scrapes(10).unwrap(), b.scrapes(10).unwrap());
        assert_eq!(
            a.pending("invite-code-secret").unwrap(),
            b.pending("invite-code-secret").unwrap()
        );
        assert!(b.pending("state-secret").unwrap().is_some());
        assert_eq!(
            b.meta_get::<Vec<NaiveDate>>("holidays").unwrap(),
            Some(vec![d("2026-01-01")])
        );
        // New log entries sort after the restored ones.
        b.append_log("1", &log("third 1")).unwrap();
        assert_eq!(b.logs("1", 1).unwrap()[0].message, "third 1");
        // A second restore into the now non-empty store is refused by the caller's check.
        assert!(b.entries().unwrap() > 0);
    }

    #[test]
    fn writes_after_the_instant_are_not_in_the_backup_and_still_happen() {
        let (_dir, a, b) = stores();
        let mut done = false;
        let file = backup_of(&a, |_| {
            if done {
                return;
            }
            done = true;
            // The header is out: the instant is fixed; nothing has been walked yet.
            a.put_tokens_unflushed("1", &tokens("RT-rotated")).unwrap();
            a.update_company_unflushed("2", |c| c.company_name = "Renamed".into())
                .unwrap();
            a.insert_company(&a.writer(), &company("3")).unwrap();
            a.put_rates("1", &[rate("2026-05-26", "99")]).unwrap();
            a.append_log("1", &log("during")).unwrap();
            assert!(a.take_pending("invite-code-secret").unwrap().is_some());
            a.meta_put("holidays", &vec![d("2027-01-01")]).unwrap();
        });
        restore(&b, &file);
        assert_eq!(b.tokens("1").unwrap().unwrap().refresh_token, "RT-secret-1");
        assert_eq!(b.company("2").unwrap().unwrap().company_name, "Company 2");
        assert!(b.company("3").unwrap().is_none());
        assert_eq!(b.rates_on("1", d("2026-05-26")).unwrap(), vec![]);
        assert!(b
            .logs("1", 10)
            .unwrap()
            .iter()
            .all(|l| l.message != "during"));
        assert!(
            b.pending("invite-code-secret").unwrap().is_some(),
            "deleted after the instant: kept"
        );
        assert_eq!(
            b.meta_get::<Vec<NaiveDate>>("holidays").unwrap(),
            Some(vec![d("2026-01-01")])
        );
        // The writes themselves happened.
        assert_eq!(a.tokens("1").unwrap().unwrap().refresh_token, "RT-rotated");
        assert_eq!(a.company("2").unwrap().unwrap().company_name, "Renamed");
        assert!(a.pending("invite-code-secret").unwrap().is_none());
        // And the next backup has them; the scratch tree was emptied.
        assert!(a.snaps.scratch_is_empty());
        let next = backup_of(&a, |_| {});
        let c = b_restore_counts(&next);
        assert_eq!(c.counts["company"], 3);
        assert_eq!(c.counts["invite"], 0);
    }

    fn b_restore_counts(file: &[u8]) -> Contents {
        read(file, |_| Ok(())).unwrap()
    }

    #[test]
    fn one_backup_at_a_time_and_a_reader_that_goes_away_ends_it() {
        let (_dir, a, _b) = stores();
        let mut inner = None;
        let _ = a.backup(Utc::now(), |_| {
            if inner.is_none() {
                inner = Some(a.backup(Utc::now(), |_| true).map(|_| ()));
            }
            true
        });
        assert!(matches!(inner, Some(Err(Error::BackupRunning))));
        let mut n = 0;
        let r = a.backup(Utc::now(), |_| {
            n += 1;
            n < 3
        });
        assert!(matches!(r, Err(Error::BackupAborted)));
        // Ended: the next one runs.
        assert!(a.backup(Utc::now(), |_| true).is_ok());
    }

    fn lines(file: &[u8]) -> Vec<String> {
        String::from_utf8(file.to_vec())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Lines joined, with a trailer of their own (a file whose sha256 is right).
    fn resealed(body: &[String]) -> Vec<u8> {
        let mut out = String::new();
        for l in body {
            out.push_str(l);
            out.push('\n');
        }
        let sha = hex::encode(Sha256::digest(out.as_bytes()));
        out.push_str(&format!(
            "{{\"end\":true,\"records\":{},\"sha256\":\"{sha}\"}}\n",
            body.len() - 1
        ));
        out.into_bytes()
    }

    fn err(file: &[u8]) -> ReadError {
        read(file, |_| Ok(())).unwrap_err()
    }

    #[test]
    fn bad_files_are_refused_naming_the_line() {
        let (_dir, a, _b) = stores();
        let file = backup_of(&a, |_| {});
        let all = lines(&file);
        let n = all.len() as u64;
        // Truncated: without its trailer, or cut in the middle of a line.
        let e = err(&file[..file.len() - all[all.len() - 1].len() - 1]);
        assert!(e.reason.contains("truncated"), "{e}");
        let e = err(&file[..file.len() / 2]);
        assert!(
            e.reason.contains("truncated") || e.reason.contains("not a JSON"),
            "{e}"
        );
        // A flipped byte inside a value: the sha256 catches it.
        let mut flipped = file.clone();
        let at = file.windows(9).position(|w| w == b"Company 1").unwrap();
        flipped[at] = b'X';
        let e = err(&flipped);
        assert_eq!(e.line, Some(n));
        assert!(e.reason.contains("sha256 mismatch"), "{e}");
        // A line of garbage.
        let mut garbage = all.clone();
        garbage.insert(3, "#%&! not json".into());
        let e = err(garbage.join("\n").as_bytes());
        assert_eq!(e.line, Some(4));
        assert!(e.reason.contains("not a JSON record"), "{e}");
        // A kind from a newer version (the file otherwise intact).
        let mut newer = all[..all.len() - 1].to_vec();
        newer.insert(2, r#"{"kind":"hologram","x":1}"#.into());
        let e = err(&resealed(&newer));
        assert_eq!(e.line, Some(3));
        assert!(
            e.reason.contains("\"hologram\"") && e.reason.contains("newer"),
            "{e}"
        );
        // A newer format version; not a backup at all; empty.
        let mut v2 = all[..all.len() - 1].to_vec();
        v2[0] = v2[0].replace("\"version\":1", "\"version\":2");
        let e = err(&resealed(&v2));
        assert_eq!(e.line, Some(1));
        assert!(e.reason.contains("version 2"), "{e}");
        assert!(err(b"{\"hello\":1}\n")
            .reason
            .contains("not a boa-exchange backup"));
        assert!(err(b"").reason.contains("empty"));
        // Data after the trailer; a count that does not match.
        let mut extra = file.clone();
        extra.extend_from_slice(b"{\"kind\":\"meta\"}\n");
        assert!(err(&extra).reason.contains("after the trailer"));
        let wrong = String::from_utf8(file.clone())
            .unwrap()
            .replace("\"records\":17", "\"records\":18");
        assert!(err(wrong.as_bytes()).reason.contains("counts 18 records"));
        // A record that is JSON of a known kind but not its shape.
        let mut shape = all[..all.len() - 1].to_vec();
        shape.insert(1, r#"{"kind":"company","company":{"realm_id":"9"}}"#.into());
        let e = err(&resealed(&shape));
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("bad company record"), "{e}");
    }

    #[test]
    fn sealed_entries_need_the_identity_and_own_meta_is_refused() {
        let (_dir, a, _b) = stores();
        let file = backup_of(&a, |_| {});
        let other = Vault::generate();
        let e = read(&file[..], |r| check_record(&other, &r)).unwrap_err();
        assert!(e.reason.contains("does not decrypt"), "{e}");
        let own = Record::Meta {
            key: "vault_recipient".into(),
            value: b64(b"age1x"),
        };
        assert!(check_record(&a.vault, &own).is_err());
        let bad_token = Record::Tokens {
            realm: "1".into(),
            ciphertext: b64(b"plain"),
        };
        assert!(check_record(&a.vault, &bad_token).is_err());
        let bad_realm = Record::Rate {
            realm: "1/../2".into(),
            rate: rate("2026-05-22", "1"),
        };
        assert!(check_record(&a.vault, &bad_realm).is_err());
        let _ = LogKind::Connection;
    }
}
