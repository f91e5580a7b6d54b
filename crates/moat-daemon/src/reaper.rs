//! The reaper (daemon-and-reaper.md §5): sweeps every available runtime for
//! moat objects whose run is not live and removes them. Single-flight,
//! bounded, reported in `daemon/reaper.json` and `/v1/health`.

pub mod decide;
pub mod live;
mod project_volumes;

use crate::audit::{AuditLog, Event};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use moat_core::RunId;
use moat_core::atomic::write_atomic;
use moat_runtime::{Runtime, RuntimeKind, labels};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::output::lock;
use crate::state::Daemon;
use decide::{Candidate, Decision, KeepReason, ObjectKey, ObjectKind, SweepInput};
use live::LiveSetError;
pub use moat_api::sweep::{FailedRemoval, RuntimeSweep, SweepReport, SweepRequest};

/// Bound on one whole sweep.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on waiting for another sweep to finish.
const SINGLE_FLIGHT_WAIT: Duration = Duration::from_secs(150);
/// Removals in flight at once.
const REMOVAL_CONCURRENCY: usize = 4;
/// Sweep reports kept in `reaper.json`.
const HISTORY: usize = 10;
/// First retry delay after a failed removal; doubles per failure.
const FAILURE_BACKOFF: Duration = Duration::from_secs(30);
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(3600);
/// How long a running Go-era container is given to stop before it is killed.
const LEGACY_STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct FailureRecord {
    count: u32,
    retry_after: DateTime<Utc>,
}

/// Persisted across daemons: first sightings, failure back-off, history.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ReaperFile {
    #[serde(default, with = "keyed")]
    first_seen: BTreeMap<ObjectKey, DateTime<Utc>>,
    #[serde(default, with = "keyed")]
    failures: BTreeMap<ObjectKey, FailureRecord>,
    #[serde(default)]
    sweeps: VecDeque<SweepReport>,
}

/// The reaper's state; sweeps hold its lock (single flight).
pub struct Reaper {
    state: Mutex<ReaperFile>,
    last: std::sync::Mutex<Option<SweepReport>>,
}

impl Reaper {
    /// Loads `reaper.json` (missing or unreadable = a fresh start).
    pub fn load(path: &std::path::Path) -> Self {
        let file: ReaperFile = std::fs::read(path)
            .ok()
            .and_then(|bytes| match serde_json::from_slice(&bytes) {
                Ok(file) => Some(file),
                Err(e) => {
                    tracing::warn!("ignoring unreadable {}: {e}", path.display());
                    None
                }
            })
            .unwrap_or_default();
        let last = file.sweeps.back().cloned();
        Reaper {
            state: Mutex::new(file),
            last: std::sync::Mutex::new(last),
        }
    }

    /// The most recent sweep's report.
    pub fn last_report(&self) -> Option<SweepReport> {
        lock(&self.last).clone()
    }

    /// Runs one sweep over every available runtime; waits for a sweep in
    /// progress first.
    pub async fn sweep(&self, daemon: &Daemon, request: &SweepRequest, trigger: &str) -> SweepReport {
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut report = SweepReport {
            started_at,
            trigger: trigger.to_string(),
            dry_run: request.dry_run,
            force: request.force,
            legacy: request.legacy,
            ..Default::default()
        };
        let Ok(mut state) = tokio::time::timeout(SINGLE_FLIGHT_WAIT, self.state.lock()).await else {
            report.error = Some(format!("another sweep did not finish within {SINGLE_FLIGHT_WAIT:?}"));
            return report;
        };
        match tokio::time::timeout(SWEEP_TIMEOUT, sweep_all(daemon, request, &mut state)).await {
            Ok(Ok(runtimes)) => report.runtimes = runtimes,
            Ok(Err(e)) => {
                tracing::error!("reaper: sweep aborted, nothing removed: {e}");
                report.error = Some(format!("sweep aborted, nothing removed: {e}"));
            }
            Err(_) => report.error = Some(format!("the sweep timed out after {SWEEP_TIMEOUT:?}")),
        }
        report.duration_ms = clock.elapsed().as_millis() as u64;
        if !request.dry_run {
            state.sweeps.push_back(report.clone());
            while state.sweeps.len() > HISTORY {
                state.sweeps.pop_front();
            }
            *lock(&self.last) = Some(report.clone());
            persist(daemon, &state);
        }
        report
    }
}

/// Sweeps after start-up reconciliation, then every `reap_interval`, until
/// the daemon shuts down.
pub async fn periodic(daemon: Daemon) {
    let mut trigger = "startup";
    loop {
        daemon.reaper().sweep(&daemon, &SweepRequest::default(), trigger).await;
        trigger = "periodic";
        tokio::select! {
            _ = tokio::time::sleep(daemon.config().reap_interval) => {}
            _ = daemon.shutdown_token().cancelled() => return,
        }
    }
}

fn persist(daemon: &Daemon, state: &ReaperFile) {
    let path = daemon.home().reaper_json();
    let result = serde_json::to_vec_pretty(state)
        .map_err(std::io::Error::other)
        .and_then(|json| write_atomic(&path, &json, 0o600));
    if let Err(e) = result {
        tracing::error!("writing {} failed: {e}", path.display());
    }
}

/// Sweeps every available runtime; aborted as a whole (nothing more
/// removed, no sightings recorded) when the live set cannot be taken.
async fn sweep_all(
    daemon: &Daemon,
    request: &SweepRequest,
    state: &mut ReaperFile,
) -> Result<Vec<RuntimeSweep>, LiveSetError> {
    let mut sweeps = Vec::new();
    let mut judged = Vec::new();
    for runtime in daemon.runtimes().available().await {
        let mut listing = list_candidates(runtime.as_ref(), &request.kinds).await;
        let now = Utc::now();
        let Some(running) = listing.running else {
            // Without the container listing the reaper cannot tell which
            // runs have a running container: this runtime is not swept.
            sweeps.push(summarise(runtime.kind(), &[], &[], listing.errors));
            continue;
        };
        // The live set is taken after listing, never before.
        let (live, pool_takers_unknown) = live_set(daemon, &mut listing.candidates, &running)?;
        let home = daemon.home().label();
        let input = SweepInput {
            candidates: &listing.candidates,
            live: &live,
            first_seen: &state.first_seen,
            now,
            force: request.force,
            second_sighting_after: chrono::Duration::from_std(daemon.config().second_sighting_after)
                .unwrap_or(chrono::Duration::MAX),
            home: &home,
            daemon: daemon.instance(),
            pool_takers_unknown,
        };
        let decisions = decide::decide(&input);
        let mut sweep = summarise(runtime.kind(), &listing.candidates, &decisions, listing.errors);
        let to_remove: Vec<&Candidate> = listing
            .candidates
            .iter()
            .zip(&decisions)
            .filter(|(c, d)| **d == Decision::Remove && !backing_off(state, &c.key, now))
            .map(|(c, _)| c)
            .collect();
        if request.dry_run {
            sweep.removed = to_remove.iter().map(|c| c.key.clone()).collect();
        } else {
            remove_all(
                runtime.clone(),
                &to_remove,
                daemon.config().stop_grace,
                state,
                &mut sweep,
            )
            .await;
            record_reaped(daemon.audit(), &to_remove, &sweep);
        }
        sweep_project_volumes(runtime.clone(), &home, request, state, &mut sweep).await;
        sweep_legacy(runtime.clone(), request, state, &mut sweep).await;
        judged.extend(listing.candidates.into_iter().zip(decisions));
        sweeps.push(sweep);
    }
    if !request.dry_run {
        state.first_seen = decide::next_first_seen(judged.iter().map(|(c, d)| (c, d)), &state.first_seen, Utc::now());
    }
    Ok(sweeps)
}

/// The live runs among the candidates' runs, and whether some run record
/// is too unreadable to say which pool network it took; an unreadable
/// registry or run record is an error, never a smaller live set. Each
/// warm-pool network gets the run that recorded it as its network (a live
/// one, when several did), or none when untaken.
fn live_set(
    daemon: &Daemon,
    candidates: &mut [Candidate],
    running: &HashSet<RunId>,
) -> Result<(HashSet<RunId>, bool), LiveSetError> {
    if let Some(reason) = daemon.registry_error() {
        return Err(LiveSetError::Registry(reason));
    }
    let registry: HashSet<RunId> = daemon.registry().all().iter().map(|h| h.id()).collect();
    let dirs = live::scan_run_dirs(daemon.store())?;
    let takers = live::network_takers(&dirs);
    let runs: Vec<RunId> = candidates
        .iter()
        .flat_map(|c| c.run_id.iter().chain(pool_takers(&takers, c)))
        .cloned()
        .collect();
    let live = live::live_runs(&runs, &registry, &dirs, running);
    for candidate in candidates.iter_mut().filter(|c| c.pool_owner.is_some()) {
        let of_run = pool_takers(&takers, candidate);
        let taker = of_run.iter().find(|id| live.contains(*id)).or(of_run.first());
        candidate.run_id = taker.cloned();
    }
    Ok((live, live::takers_unknown(&dirs)))
}

/// The runs that recorded a pool network (named like its holder) as
/// theirs (none for other objects).
fn pool_takers<'a>(takers: &'a BTreeMap<String, Vec<RunId>>, candidate: &Candidate) -> &'a [RunId] {
    match candidate.pool_owner {
        Some(_) => takers.get(&candidate.key.name).map_or(&[], Vec::as_slice),
        None => &[],
    }
}

fn backing_off(state: &ReaperFile, key: &ObjectKey, now: DateTime<Utc>) -> bool {
    state.failures.get(key).is_some_and(|f| f.retry_after > now)
}

fn summarise(
    runtime: RuntimeKind,
    candidates: &[Candidate],
    decisions: &[Decision],
    errors: Vec<String>,
) -> RuntimeSweep {
    let count = |pred: &dyn Fn(&Decision) -> bool| decisions.iter().filter(|d| pred(d)).count();
    RuntimeSweep {
        runtime,
        candidates: candidates.len(),
        live: count(&|d| *d == Decision::Keep(KeepReason::Live)),
        removed: Vec::new(),
        awaiting_second_sighting: count(&|d| *d == Decision::Keep(KeepReason::AwaitingSecondSighting)),
        protected: count(&|d| {
            matches!(
                d,
                Decision::Keep(
                    KeepReason::ForeignHome
                        | KeepReason::ForeignAttachment(_)
                        | KeepReason::NotARunObject
                        | KeepReason::Pool
                        | KeepReason::PoolTakerUnknown
                )
            )
        }),
        failed: Vec::new(),
        errors,
        legacy: Vec::new(),
    }
}

/// Removes containers first (a network cannot go while they are attached),
/// then networks, then volumes; a few at a time.
async fn remove_all(
    runtime: Arc<dyn Runtime>,
    targets: &[&Candidate],
    stop_grace: Duration,
    state: &mut ReaperFile,
    sweep: &mut RuntimeSweep,
) {
    for kind in [ObjectKind::Container, ObjectKind::Network, ObjectKind::Volume] {
        let batch: Vec<Candidate> = targets
            .iter()
            .filter(|c| c.key.kind == kind)
            .map(|c| (*c).clone())
            .collect();
        let results: Vec<(ObjectKey, Result<(), String>)> = futures_util::stream::iter(batch)
            .map(|candidate| {
                let runtime = runtime.clone();
                async move {
                    let result = remove_one(runtime.as_ref(), &candidate, stop_grace)
                        .await
                        .map_err(|e| e.to_string());
                    (candidate.key, result)
                }
            })
            .buffer_unordered(REMOVAL_CONCURRENCY)
            .collect()
            .await;
        for (key, result) in results {
            record_removal(state, sweep, key, result);
        }
    }
    sweep.removed.sort();
}

/// A running container is stopped gracefully first (SIGTERM, then a kill
/// after the grace period), and only a stopped one is removed; networks
/// and volumes get a plain remove (never a forced disconnect).
async fn remove_one(
    runtime: &dyn Runtime,
    candidate: &Candidate,
    stop_grace: Duration,
) -> Result<(), moat_runtime::RuntimeError> {
    let name = &candidate.key.name;
    match candidate.key.kind {
        ObjectKind::Container => {
            if candidate.running {
                tracing::warn!("stopping orphaned running container {name} before removing it");
                match runtime.stop_container(name, stop_grace).await {
                    Err(e) if !e.is_not_found() => return Err(e),
                    _ => {}
                }
            }
            runtime.remove_stopped_container(name).await
        }
        ObjectKind::Network => runtime.remove_network(name).await,
        ObjectKind::Volume => runtime.remove_volume(name).await,
    }
}

fn record_removal(state: &mut ReaperFile, sweep: &mut RuntimeSweep, key: ObjectKey, result: Result<(), String>) {
    match result {
        Ok(()) => {
            tracing::info!("reaped {key}");
            state.failures.remove(&key);
            sweep.removed.push(key);
        }
        Err(error) => {
            let record = state.failures.entry(key.clone()).or_insert(FailureRecord {
                count: 0,
                retry_after: Utc::now(),
            });
            record.count += 1;
            let backoff = FAILURE_BACKOFF
                .saturating_mul(1 << record.count.min(8))
                .min(MAX_FAILURE_BACKOFF);
            record.retry_after = Utc::now() + chrono::Duration::from_std(backoff).unwrap_or_default();
            tracing::warn!("reaping {key} failed ({} time(s)): {error}", record.count);
            sweep.failed.push(FailedRemoval {
                object: key,
                error,
                failures: record.count,
            });
        }
    }
}

/// Tells each run's audit log what the sweep removed of its objects (or
/// failed to).
fn record_reaped(audit: &AuditLog, removed: &[&Candidate], sweep: &RuntimeSweep) {
    for candidate in removed {
        let Some(run) = &candidate.run_id else { continue };
        let error = sweep
            .failed
            .iter()
            .find(|f| f.object == candidate.key)
            .map(|f| f.error.clone());
        if error.is_none() && !sweep.removed.contains(&candidate.key) {
            continue;
        }
        audit.record(
            run,
            Event::Reaped {
                object: candidate.key.kind.to_string(),
                name: candidate.key.name.clone(),
                error,
            },
        );
    }
}

/// On `moat system prune --volumes` only (volumes asked for by name): the
/// volumes of persisted services that no project uses any more.
async fn sweep_project_volumes(
    runtime: Arc<dyn Runtime>,
    home: &str,
    request: &SweepRequest,
    state: &mut ReaperFile,
    sweep: &mut RuntimeSweep,
) {
    if !request.kinds.contains(&ObjectKind::Volume) {
        return;
    }
    let volumes = match runtime.list_volumes().await {
        Ok(volumes) => volumes,
        Err(e) => {
            sweep.errors.push(format!("listing volumes: {e}"));
            return;
        }
    };
    let candidates: Vec<Candidate> = project_volumes::unused(&volumes, home)
        .into_iter()
        .map(|v| Candidate {
            key: ObjectKey {
                runtime: runtime.kind(),
                kind: ObjectKind::Volume,
                name: v.name.clone(),
            },
            run_id: None,
            home: Some(home.to_string()),
            attached: Vec::new(),
            running: false,
            pool_owner: None,
        })
        .collect();
    if request.dry_run {
        sweep.removed.extend(candidates.into_iter().map(|c| c.key));
        sweep.removed.sort();
        return;
    }
    let targets: Vec<&Candidate> = candidates.iter().collect();
    remove_all(runtime, &targets, Duration::ZERO, state, sweep).await;
}

/// Go-era objects: listed by every sweep, removed only when the request
/// says `legacy`: containers first (a running one is stopped gracefully
/// before it is removed), then networks (plain remove, never a forced
/// disconnect), then volumes.
async fn sweep_legacy(
    runtime: Arc<dyn Runtime>,
    request: &SweepRequest,
    state: &mut ReaperFile,
    sweep: &mut RuntimeSweep,
) {
    let found = match runtime.list_legacy().await {
        Ok(found) => found,
        Err(e) => {
            sweep.errors.push(format!("listing Go-era objects: {e}"));
            return;
        }
    };
    let wanted = |kind| request.kinds.is_empty() || request.kinds.contains(&kind);
    let legacy = |kind, name: &str, running| Candidate {
        key: ObjectKey {
            runtime: runtime.kind(),
            kind,
            name: name.to_string(),
        },
        run_id: None,
        home: None,
        attached: Vec::new(),
        running,
        pool_owner: None,
    };
    let candidates: Vec<Candidate> = (found.containers.iter())
        .map(|c| legacy(ObjectKind::Container, &c.name, c.status.is_running()))
        .chain(
            found
                .networks
                .iter()
                .map(|n| legacy(ObjectKind::Network, &n.name, false)),
        )
        .chain(found.volumes.iter().map(|v| legacy(ObjectKind::Volume, &v.name, false)))
        .filter(|c| wanted(c.key.kind))
        .collect();
    sweep.legacy = candidates.iter().map(|c| c.key.clone()).collect();
    sweep.legacy.sort();
    if !request.legacy {
        return;
    }
    if request.dry_run {
        sweep.removed.extend(sweep.legacy.iter().cloned());
        sweep.removed.sort();
        return;
    }
    let targets: Vec<&Candidate> = candidates.iter().collect();
    remove_all(runtime, &targets, LEGACY_STOP_GRACE, state, sweep).await;
}

/// What one runtime holds: the candidates of the wanted kinds, and the
/// runs with a running container (`None` when containers could not be
/// listed).
struct Listing {
    candidates: Vec<Candidate>,
    running: Option<HashSet<RunId>>,
    errors: Vec<String>,
}

/// Lists candidates; containers are always listed, since which runs have a
/// running container is part of the liveness evidence.
async fn list_candidates(runtime: &dyn Runtime, kinds: &[ObjectKind]) -> Listing {
    let wanted = |kind| kinds.is_empty() || kinds.contains(&kind);
    let kind = runtime.kind();
    let mut listing = Listing {
        candidates: Vec::new(),
        running: None,
        errors: Vec::new(),
    };
    match runtime.list_containers().await {
        Ok(list) => {
            // A running sidecar is no evidence that its run lives: a run
            // whose creation died after starting one has no other.
            let mut running = HashSet::new();
            let containers: Vec<Candidate> = list
                .into_iter()
                .filter_map(|c| {
                    // A pool holder's run, like its network's, comes from
                    // the run records, later.
                    let pool_owner = crate::pool::owner(&c.labels);
                    let run_id = match pool_owner {
                        Some(_) => None,
                        None => label_run(&c.labels).or_else(|| decide::run_of_container(&c.name)),
                    };
                    let is_running = c.status.is_running();
                    // Nor is a running gateway holder: it sleeps until removed.
                    let sidecar = (c.labels.get(labels::ROLE))
                        .is_some_and(|r| r == labels::role::SERVICE || r == labels::role::HOLDER);
                    let mut candidate = candidate(kind, ObjectKind::Container, c.name, run_id, &c.labels, Vec::new())?;
                    candidate.running = is_running;
                    candidate.pool_owner = pool_owner;
                    if is_running && !sidecar {
                        running.extend(candidate.run_id.clone());
                    }
                    Some(candidate)
                })
                .collect();
            listing.running = Some(running);
            if wanted(ObjectKind::Container) {
                listing.candidates.extend(containers);
            }
        }
        Err(e) => listing.errors.push(format!("listing containers: {e}")),
    }
    if wanted(ObjectKind::Network) {
        match runtime.list_networks().await {
            Ok(list) => listing.candidates.extend(list.into_iter().filter_map(|n| {
                // A pool network's run comes from the run records, later.
                let pool_owner = crate::pool::owner(&n.labels);
                let run_id = match pool_owner {
                    Some(_) => None,
                    None => label_run(&n.labels).or_else(|| RunId::from_network_name(&n.name)),
                };
                // A pool network's own holder is removed with it.
                let attached = (n.containers.into_iter())
                    .filter(|c| pool_owner.is_none() || *c != n.name)
                    .collect();
                let mut candidate = candidate(kind, ObjectKind::Network, n.name, run_id, &n.labels, attached)?;
                candidate.pool_owner = pool_owner;
                Some(candidate)
            })),
            Err(e) => listing.errors.push(format!("listing networks: {e}")),
        }
    }
    if wanted(ObjectKind::Volume) {
        match runtime.list_volumes().await {
            Ok(list) => listing.candidates.extend(list.into_iter().filter_map(|v| {
                let run_id = label_run(&v.labels);
                candidate(kind, ObjectKind::Volume, v.name, run_id, &v.labels, Vec::new())
            })),
            Err(e) => listing.errors.push(format!("listing volumes: {e}")),
        }
    }
    listing
}

fn label_run(object_labels: &BTreeMap<String, String>) -> Option<RunId> {
    object_labels.get(labels::RUN_ID).and_then(|id| id.parse().ok())
}

/// Objects carrying moat's managed label, or (unlabelled) a run's name.
fn candidate(
    runtime: RuntimeKind,
    kind: ObjectKind,
    name: String,
    run_id: Option<RunId>,
    object_labels: &BTreeMap<String, String>,
    attached: Vec<String>,
) -> Option<Candidate> {
    let managed = object_labels.get(labels::MANAGED).is_some_and(|v| v == "true");
    if !managed && run_id.is_none() {
        return None;
    }
    let home = object_labels.get(labels::HOME).cloned();
    Some(Candidate {
        key: ObjectKey { runtime, kind, name },
        run_id,
        home,
        attached,
        running: false,
        pool_owner: None,
    })
}

/// Serialises maps keyed by [`ObjectKey`] as lists of pairs (JSON object
/// keys must be strings).
mod keyed {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::ObjectKey;

    pub fn serialize<V: Serialize, S: Serializer>(map: &BTreeMap<ObjectKey, V>, s: S) -> Result<S::Ok, S::Error> {
        map.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ObjectKey, V>, D::Error> {
        Ok(Vec::<(ObjectKey, V)>::deserialize(d)?.into_iter().collect())
    }
}
