//! Taking over existing QuickBooks connections (SPEC §10), as operations: `adopt` (one
//! refresh token) and `import-connections` (a batch of an import file from the admin CLI).
//! Parsing a line and the takeover itself are [`crate::connections::takeover`]; here are the
//! answers, the batch's bounded concurrency and the sync of each company taken over.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{ApiError, Ctx, OpResult};
use crate::connections::takeover::{check_name, short};
use crate::connections::Takeover;

pub use crate::connections::takeover::{
    check_currency, check_realm, fernet_key, parse_line, reveal, too_long, MAX_IMPORT_LINE,
};

/// `adopt REALM [--name TEXT] [--home-currency XXX]` (refresh token from the CLI's stdin):
/// takes over one connection. The company counts as newly connected.
///
/// # Errors
/// 400 bad realm, name, currency or empty token; 502 Intuit refused the token (its reason
/// quoted; nothing stored) or failed; store failure.
pub async fn adopt(
    state: &Arc<Ctx>,
    realm: &str,
    name: Option<&str>,
    home_currency: Option<&str>,
    refresh_token: &str,
) -> OpResult {
    check_realm(realm)?;
    let name = match name {
        Some(n) => Some(
            check_name(n)
                .map_err(|m| ApiError::bad_request("bad_name", m))?
                .ok_or_else(|| ApiError::bad_request("bad_name", "--name is empty"))?,
        ),
        None => None,
    };
    let home = home_currency.map(check_currency).transpose()?;
    let refresh_token = refresh_token.trim();
    if refresh_token.is_empty() {
        return Err(ApiError::bad_request(
            "missing_token",
            "no refresh token given (the CLI reads it from standard input)",
        ));
    }
    let t = Takeover {
        realm: realm.to_string(),
        refresh_token: refresh_token.to_string(),
        name,
        home,
        sync_enabled: None,
        created_at: None,
        last_sync_at: None,
        how: "adopted (connection taken over with an existing refresh token)",
    };
    let taken = state.connections.take_over(&t).await?;
    super::sync::after_connected(state, realm);
    let c = &taken.company;
    tracing::info!(
        realm_id = realm,
        "Company {realm}: adopted ({})",
        c.company_name
    );
    Ok(json!({
        "success": true,
        "message": format!("Adopted {} ({realm}); it syncs like any connected company", c.company_name),
        "company_id": c.realm_id,
        "company_name": c.company_name,
        "home_currency": c.home_currency.as_str(),
        "details_read": taken.details_read,
        "warning": taken.warning,
        "company": super::companies::entry(c),
    }))
}

/// One line's result (SPEC §10).
fn result(line: u64, realm: Option<&str>, action: &str, error: Option<&str>) -> Value {
    json!({
        "line": line,
        "realm_id": realm,
        "ok": action != "failed",
        "action": action,
        "error": error,
    })
}

/// The realm of a line that did not parse, when one can be seen (for the result only).
fn realm_of(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v.get("realm_id").or_else(|| v.get("company_id"))? {
        Value::String(s) => Some(short(s.trim())),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The answer of one batch, from its per-line results.
fn batch_answer(dry_run: bool, results: Vec<Value>) -> Value {
    let count = |a: &str| results.iter().filter(|r| r["action"] == a).count();
    json!({
        "success": true,
        "dry_run": dry_run,
        "imported": count("imported"),
        "skipped": count("skipped"),
        "failed": count("failed"),
        "results": results,
    })
}

/// `import_connections`: one batch of an import file, as the CLI sends it:
/// `{"lines": [{"line": N, "text": "…"}], "fernet_key": "…"?, "dry_run": bool}`. Lines are
/// parsed and decrypted first, then taken over concurrently (at most
/// `quickbooks.max_concurrent_companies` at a time). One line's failure never stops another.
///
/// # Errors
/// 400 for a malformed request or Fernet key; store failure.
pub async fn import_connections(state: &Arc<Ctx>, args: &Value) -> OpResult {
    let dry_run = args
        .get("dry_run")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let key = match args.get("fernet_key").and_then(Value::as_str) {
        Some(k) => Some(fernet_key(k)?),
        None => None,
    };
    let lines = batch_lines(args)?;
    let mut results: Vec<Option<Value>> = vec![None; lines.len()];
    let mut work = Vec::new();
    let mut seen = HashSet::new();
    for (i, &(n, text)) in lines.iter().enumerate() {
        match plan_line(state, n, text, key.as_ref(), dry_run, &mut seen).await? {
            Planned::Answered(v) => results[i] = Some(v),
            Planned::TakeOver(t) => work.push((i, t)),
        }
    }
    take_over_all(state, work, &lines, &mut results).await;
    let results: Vec<Value> = results
        .into_iter()
        .zip(&lines)
        .map(|(r, (n, _))| {
            r.unwrap_or_else(|| {
                result(
                    *n,
                    None,
                    "failed",
                    Some("internal error; see the daemon's log"),
                )
            })
        })
        .collect();
    let answer = batch_answer(dry_run, results);
    tracing::info!(
        lines = lines.len(),
        dry_run,
        "import-connections: {} imported, {} skipped, {} failed",
        answer["imported"],
        answer["skipped"],
        answer["failed"]
    );
    Ok(answer)
}

/// The `lines` of an `import_connections` request: `(line number, text)` pairs.
fn batch_lines(args: &Value) -> Result<Vec<(u64, &str)>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "bad_lines",
            "\"lines\" must be a list of {\"line\": N, \"text\": \"...\"}",
        )
    };
    args.get("lines")
        .and_then(Value::as_array)
        .ok_or_else(bad)?
        .iter()
        .map(|l| Some((l.get("line")?.as_u64()?, l.get("text")?.as_str()?)))
        .collect::<Option<_>>()
        .ok_or_else(bad)
}

/// What the first pass makes of one line: its result at once, or a takeover to run.
enum Planned {
    Answered(Value),
    TakeOver(Takeover),
}

/// Parses, checks and decrypts one line (`seen`: the realms of earlier lines); a dry run
/// stops here.
async fn plan_line(
    state: &Ctx,
    n: u64,
    text: &str,
    key: Option<&fernet::Fernet>,
    dry_run: bool,
    seen: &mut HashSet<String>,
) -> Result<Planned, ApiError> {
    if text.len() > MAX_IMPORT_LINE {
        return Ok(Planned::Answered(result(
            n,
            None,
            "failed",
            Some(&too_long()),
        )));
    }
    let l = match parse_line(text) {
        Ok(l) => l,
        Err(msg) => {
            return Ok(Planned::Answered(result(
                n,
                realm_of(text).as_deref(),
                "failed",
                Some(&msg),
            )));
        }
    };
    let realm = Some(l.realm.as_str());
    if !l.is_active {
        return Ok(Planned::Answered(skipped(
            n,
            realm,
            "is_active is false in the file",
        )));
    }
    let token = match reveal(&l.token, key) {
        Ok(t) => t,
        Err(msg) => {
            return Ok(Planned::Answered(result(n, realm, "failed", Some(&msg))));
        }
    };
    if !seen.insert(l.realm.clone()) {
        return Ok(Planned::Answered(skipped(
            n,
            realm,
            "the same realm is on an earlier line",
        )));
    }
    if state
        .store
        .company(&l.realm)
        .await?
        .is_some_and(|c| c.is_connected())
    {
        return Ok(Planned::Answered(skipped(
            n,
            realm,
            "already connected here",
        )));
    }
    if dry_run {
        return Ok(Planned::Answered(result(n, realm, "imported", None)));
    }
    Ok(Planned::TakeOver(Takeover {
        realm: l.realm,
        refresh_token: token,
        name: l.name,
        home: l.home,
        sync_enabled: l.sync_enabled,
        created_at: l.created_at,
        last_sync_at: l.last_sync_at,
        how: "imported (connection taken over from an import file)",
    }))
}

/// Runs the takeovers, at most `quickbooks.max_concurrent_companies` at a time; each fills
/// its line's result.
async fn take_over_all(
    state: &Arc<Ctx>,
    work: Vec<(usize, Takeover)>,
    lines: &[(u64, &str)],
    results: &mut [Option<Value>],
) {
    let limit = state.config().quickbooks.max_concurrent_companies.max(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in work {
        let st = state.clone();
        let permits = permits.clone();
        // Tracked so a shutdown waits for a rotation in flight to be stored.
        set.spawn(state.tasks.track_future(async move {
            let _permit = permits.acquire_owned().await;
            let r = st.connections.take_over(&t).await;
            (i, t.realm, r)
        }));
    }
    while let Some(joined) = set.join_next().await {
        let Ok((i, realm, r)) = joined else { continue };
        let n = lines[i].0;
        results[i] = Some(match r {
            Ok(taken) => {
                super::sync::after_connected(state, &realm);
                let mut v = result(n, Some(&realm), "imported", None);
                if let Some(w) = taken.warning {
                    v["warning"] = json!(w);
                }
                v
            }
            Err(e) => {
                let e = ApiError::from(e);
                tracing::warn!(realm_id = %realm, error = %e.message, "import-connections: {realm} failed");
                result(n, Some(&realm), "failed", Some(&e.message))
            }
        });
    }
}

fn skipped(line: u64, realm: Option<&str>, reason: &str) -> Value {
    let mut v = result(line, realm, "skipped", None);
    v["reason"] = json!(reason);
    v
}
