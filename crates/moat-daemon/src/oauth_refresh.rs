//! Keeps refreshable grants fresh: OAuth grants are refreshed at the
//! issuer's token endpoint before they expire (`moat_creds::oauth::
//! refresh_due_at`), and a `github` grant taken from `gh auth token` is
//! re-read from gh every [`GH_RECHECK`]. A changed credential is saved
//! (encrypted) and pushed into the live runs' injections, so their next
//! request carries it. A failing issuer is retried with backoff, each
//! failure logged and audited for the runs using the grant (never a token).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use moat_core::RunId;
use moat_creds::grant::TokenSources;
use moat_creds::oauth::{self, Client, OauthError};
use moat_creds::{Credential, CredentialStore, StoreError};
use tokio::sync::{Mutex, Notify};

use crate::api::RunSpec;
use crate::audit::Event;
use crate::state::Daemon;

/// The longest the refresher sleeps between looks at the store.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(30);
/// The first retry after a failed refresh; doubled per failure.
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How often a grant from `gh auth token` is compared with gh's token.
pub const GH_RECHECK: Duration = Duration::from_secs(15 * 60);
/// The source `moat grant github` records for a token from gh.
const GH_SOURCE: &str = "gh auth token";

/// A grant: its profile and name.
type GrantKey = (Option<String>, String);

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error("{0}")]
    Oauth(#[from] OauthError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the issuer client: {0}")]
    Client(String),
}

/// The refresher's state, shared by its task and run creation.
#[derive(Default)]
pub struct Refresher {
    wake: Notify,
    /// Where `gh auth token` is run from.
    gh: TokenSources,
    /// Held for a whole pass, so a refresh token is never used twice.
    schedule: Mutex<Schedule>,
    client: OnceLock<Result<Client, String>>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Schedule {
    /// Failed refreshes: how many in a row, and when to try again.
    failures: HashMap<GrantKey, (u32, DateTime<Utc>)>,
    /// When each gh-sourced grant was last compared with gh.
    gh_checked: HashMap<GrantKey, DateTime<Utc>>,
}

impl Refresher {
    /// Credentials changed (`moat grant`): look again now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn client(&self, daemon: &Daemon) -> Result<Client, RefreshError> {
        self.client
            .get_or_init(|| issuer_client(daemon))
            .clone()
            .map_err(RefreshError::Client)
    }
}

/// The issuer client, trusting `extra_ca_file` like the proxy does.
fn issuer_client(daemon: &Daemon) -> Result<Client, String> {
    let extra = daemon.config().egress.as_ref().and_then(|e| e.extra_root_ca.clone());
    let pem = match extra {
        Some(path) => Some(std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?),
        None => None,
    };
    Client::new(pem.as_deref(), oauth::http::EXCHANGE_TIMEOUT).map_err(|e| e.to_string())
}

/// The refresher task: a pass, then sleep until the next grant is due (at
/// most [`SCAN_INTERVAL`]) or a wake-up, until shutdown.
pub async fn keep_fresh(daemon: Daemon) {
    loop {
        let next = refresh_pass(&daemon).await;
        let wait = next
            .map_or(SCAN_INTERVAL, |at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .min(SCAN_INTERVAL);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = daemon.oauth().wake.notified() => {}
            () = daemon.shutdown_token().cancelled() => return,
        }
    }
}

/// Refreshes every due grant of every profile; returns when the next one
/// is due. Live runs get the changes.
pub async fn refresh_pass(daemon: &Daemon) -> Option<DateTime<Utc>> {
    let mut schedule = daemon.oauth().schedule.lock().await;
    let mut next: Option<DateTime<Utc>> = None;
    let mut changed = false;
    for profile in CredentialStore::profiles(daemon.home()) {
        let store = match CredentialStore::open(daemon.home(), profile.as_deref()) {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!("refresher: cannot open the credential store: {e}");
                continue;
            }
        };
        for name in store.names().unwrap_or_default() {
            let Ok(Some(credential)) = store.load(&name) else {
                continue;
            };
            let key = (profile.clone(), name);
            let (did_change, due) = look_at(daemon, &mut schedule, &store, &key, credential).await;
            changed |= did_change;
            next = earliest(next, due);
        }
    }
    drop(schedule);
    if changed {
        crate::grants::refresh_live_runs(daemon);
    }
    next
}

/// Refreshes the grants of `spec` that are due (ignoring backoff), before
/// a run is created with them.
pub async fn ensure_fresh(daemon: &Daemon, spec: &RunSpec) {
    if spec.grants.is_empty() {
        return;
    }
    let Ok(store) = CredentialStore::open(daemon.home(), spec.profile.as_deref()) else {
        return;
    };
    let mut schedule = daemon.oauth().schedule.lock().await;
    for name in &spec.grants {
        let Ok(Some(credential)) = store.load(name) else {
            continue;
        };
        let key = (spec.profile.clone(), name.clone());
        if oauth::refresh_schedule(&credential).is_some_and(|(_, due)| due <= Utc::now()) {
            schedule.failures.remove(&key);
            look_at(daemon, &mut schedule, &store, &key, credential).await;
        }
    }
}

/// One credential: refreshed when due. Returns whether it changed and
/// when it is due next.
async fn look_at(
    daemon: &Daemon,
    schedule: &mut Schedule,
    store: &CredentialStore,
    key: &GrantKey,
    credential: Credential,
) -> (bool, Option<DateTime<Utc>>) {
    let now = Utc::now();
    if credential.metadata.source.as_deref() == Some(GH_SOURCE) {
        let gh = daemon.oauth().gh.clone();
        return (recheck_gh(&gh, schedule, store, key, credential, now).await, None);
    }
    let Some((_, due)) = oauth::refresh_schedule(&credential) else {
        return (false, None);
    };
    if let Some((_, retry_at)) = schedule.failures.get(key)
        && *retry_at > now
    {
        return (false, Some(*retry_at));
    }
    if due > now {
        return (false, Some(due));
    }
    match refresh_one(daemon, store, &key.1, credential).await {
        Ok(next_due) => {
            schedule.failures.remove(key);
            audit_runs(daemon, key, |grant| Event::GrantRefreshed {
                grant,
                expires_at: next_due.1.map(|at| at.to_rfc3339()),
            });
            (true, next_due.0)
        }
        Err(e) => {
            let failures = schedule.failures.get(key).map_or(0, |(n, _)| *n) + 1;
            let delay = retry_delay(failures);
            let retry_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            schedule.failures.insert(key.clone(), (failures, retry_at));
            let reason = e.to_string();
            tracing::warn!(grant = %key.1, failures, "refreshing the grant failed ({reason}); retrying in {delay:?}");
            audit_runs(daemon, key, |grant| Event::GrantRefreshFailed {
                grant,
                reason: reason.clone(),
                retry_in_seconds: delay.as_secs(),
            });
            (false, Some(retry_at))
        }
    }
}

/// Refreshes and saves one credential unless it was granted again
/// meanwhile; returns when it is due next and when it expires.
async fn refresh_one(
    daemon: &Daemon,
    store: &CredentialStore,
    name: &str,
    credential: Credential,
) -> Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>), RefreshError> {
    let client = daemon.oauth().client(daemon)?;
    let Some(state) = credential.oauth.as_ref() else {
        return Ok((None, None));
    };
    let response = oauth::refresh(&client, state).await?;
    let mut refreshed = credential.clone();
    oauth::apply(&mut refreshed, response, Utc::now());
    if store.load(name)?.as_ref() != Some(&credential) {
        tracing::info!(grant = %name, "the grant changed while it was refreshed; keeping the new grant");
        return Ok((None, None));
    }
    store.save(name, &refreshed)?;
    tracing::info!(grant = %name, expires_at = ?refreshed.metadata.expires_at, "refreshed the grant");
    let due = oauth::refresh_schedule(&refreshed).map(|(_, due)| due);
    Ok((due, refreshed.metadata.expires_at))
}

/// A gh-sourced grant, compared with `gh auth token` every [`GH_RECHECK`];
/// a new token from gh replaces it. Returns whether it changed.
async fn recheck_gh(
    gh: &TokenSources,
    schedule: &mut Schedule,
    store: &CredentialStore,
    key: &GrantKey,
    credential: Credential,
    now: DateTime<Utc>,
) -> bool {
    let recheck = chrono::Duration::from_std(GH_RECHECK).unwrap_or(chrono::Duration::MAX);
    if schedule.gh_checked.get(key).is_some_and(|at| *at + recheck > now) {
        return false;
    }
    schedule.gh_checked.insert(key.clone(), now);
    let gh = gh.clone();
    let read = tokio::task::spawn_blocking(move || gh.gh_token()).await;
    let Ok(Some(from_gh)) = read else { return false };
    if from_gh.token == credential.token {
        return false;
    }
    let mut renewed = credential;
    renewed.token = from_gh.token;
    match store.save(&key.1, &renewed) {
        Ok(()) => {
            tracing::info!(grant = %key.1, "took the new token from `gh auth token`");
            true
        }
        Err(e) => {
            tracing::warn!(grant = %key.1, "saving the token from `gh auth token` failed: {e}");
            false
        }
    }
}

/// `FIRST_RETRY`, doubled per failure in a row, at most `MAX_RETRY`.
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Records `event` for every live run of the grant's profile using it.
fn audit_runs(daemon: &Daemon, key: &GrantKey, event: impl Fn(String) -> Event) {
    let runs: Vec<RunId> = daemon
        .registry()
        .all()
        .iter()
        .filter(|h| h.spec.profile == key.0 && h.spec.grants.contains(&key.1))
        .map(|h| h.id())
        .collect();
    for run in runs {
        daemon.audit().record(&run, event(key.1.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_five_minutes() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }

    /// A `gh` that prints `token`.
    fn fake_gh(dir: &std::path::Path, token: &str) -> TokenSources {
        let program = dir.join("gh");
        std::fs::write(&program, format!("#!/bin/sh\necho {token}\n")).unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        TokenSources {
            gh_program: program,
            ..TokenSources::default()
        }
    }

    #[tokio::test]
    async fn a_grant_from_gh_takes_gh_s_new_token_at_most_every_recheck() {
        let dir = tempfile::tempdir().unwrap();
        let home = moat_core::MoatHome::new(dir.path().join("home"));
        let keys = Box::new(moat_creds::FileKeyStore::new(&home.credentials_dir()));
        let store = CredentialStore::with_key_store(&home, None, keys).unwrap();
        let mut credential = Credential::new("gho_old-token-1111", moat_creds::CredentialKind::OauthToken);
        credential.metadata.source = Some(GH_SOURCE.into());
        store.save("github", &credential).unwrap();
        let key = (None, "github".to_owned());
        let mut schedule = Schedule::default();
        let now = Utc::now();
        let gh = fake_gh(dir.path(), "gho_new-token-2222");
        assert!(recheck_gh(&gh, &mut schedule, &store, &key, credential.clone(), now).await);
        let stored = store.load("github").unwrap().unwrap();
        assert_eq!(stored.token, "gho_new-token-2222");
        assert_eq!(stored.metadata.source.as_deref(), Some(GH_SOURCE));
        let newer = fake_gh(dir.path(), "gho_newer-token-3333");
        let soon = now + chrono::Duration::seconds(60);
        assert!(!recheck_gh(&newer, &mut schedule, &store, &key, stored.clone(), soon).await);
        let later = now + chrono::Duration::from_std(GH_RECHECK).unwrap();
        assert!(recheck_gh(&newer, &mut schedule, &store, &key, stored, later).await);
        let same = store.load("github").unwrap().unwrap();
        assert!(
            !recheck_gh(
                &newer,
                &mut schedule,
                &store,
                &key,
                same,
                later + chrono::Duration::from_std(GH_RECHECK).unwrap()
            )
            .await
        );
    }

    #[test]
    fn the_earliest_time_wins() {
        let t = Utc::now();
        let later = t + chrono::Duration::seconds(1);
        assert_eq!(earliest(Some(later), Some(t)), Some(t));
        assert_eq!(earliest(None, Some(t)), Some(t));
        assert_eq!(earliest(None, None), None);
    }
}
