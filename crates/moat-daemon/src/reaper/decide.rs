//! The orphan decision as a pure function (daemon-and-reaper.md §5):
//! candidates, the live set, the previous sweep and the time in; one
//! decision per candidate out. No I/O, so every rule is table-tested.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use moat_core::RunId;
use serde::{Deserialize, Serialize};

pub use moat_api::sweep::{ObjectKey, ObjectKind};

/// By default a candidate must have been seen this long before it is
/// removed (absorbs asynchronous teardown, notably on Apple containers).
pub const SECOND_SIGHTING_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// A runtime object that moat may have created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub key: ObjectKey,
    /// The run it belongs to (from its label, else its name).
    pub run_id: Option<RunId>,
    /// `dev.moat.home` label; `None` for unlabelled (legacy or Apple) objects.
    pub home: Option<String>,
    /// For networks: the names of attached containers (a pool network's
    /// own holder, named like it, is not listed).
    pub attached: Vec<String>,
    /// For containers: it is running (a sweep stops it before removing it).
    pub running: bool,
    /// For warm-pool networks and their holder containers
    /// (`dev.moat.role=pool`): the daemon instance that created it (empty
    /// when unlabelled). Such an object's `run_id` is the run that took the
    /// network (from the run records), `None` if untaken.
    pub pool_owner: Option<String>,
}

/// Why a candidate is left alone this time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepReason {
    /// Its run is live.
    Live,
    /// Labelled with another `MOAT_HOME`.
    ForeignHome,
    /// Not recognisably a run's object.
    NotARunObject,
    /// A network with a container of another run (or no run) attached.
    ForeignAttachment(String),
    /// First seen now or less than a minute ago; removed on a later sweep.
    AwaitingSecondSighting,
    /// An untaken warm-pool network of the running daemon.
    Pool,
    /// An untaken pool network of a dead daemon, while some run record
    /// cannot be read (that run may have taken it).
    PoolTakerUnknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Remove,
    Keep(KeepReason),
}

/// Everything the decision depends on.
pub struct SweepInput<'a> {
    pub candidates: &'a [Candidate],
    /// Runs that must not be disturbed.
    pub live: &'a HashSet<RunId>,
    /// When each object was first seen by earlier sweeps.
    pub first_seen: &'a BTreeMap<ObjectKey, DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// Skip the two-sweep wait (never the liveness check).
    pub force: bool,
    /// How long before a second sighting counts.
    pub second_sighting_after: Duration,
    /// This `MOAT_HOME`'s label.
    pub home: &'a str,
    /// The running daemon's instance: its untaken pool networks are live.
    pub daemon: &'a str,
    /// Some run record is unreadable yet young: which network it took
    /// cannot be known, so no dead daemon's pool network is removed.
    pub pool_takers_unknown: bool,
}

/// One decision per candidate, in the candidates' order.
pub fn decide(input: &SweepInput<'_>) -> Vec<Decision> {
    input.candidates.iter().map(|c| decide_one(input, c)).collect()
}

fn decide_one(input: &SweepInput<'_>, candidate: &Candidate) -> Decision {
    if candidate.home.as_deref().is_some_and(|home| home != input.home) {
        return Decision::Keep(KeepReason::ForeignHome);
    }
    if let (Some(owner), None) = (&candidate.pool_owner, &candidate.run_id) {
        return decide_untaken_pool(input, candidate, owner);
    }
    let Some(run_id) = &candidate.run_id else {
        return Decision::Keep(KeepReason::NotARunObject);
    };
    if input.live.contains(run_id) {
        return Decision::Keep(KeepReason::Live);
    }
    if let Some(foreign) = candidate
        .attached
        .iter()
        .find(|name| run_of_container(name).as_ref() != Some(run_id))
    {
        return Decision::Keep(KeepReason::ForeignAttachment(foreign.clone()));
    }
    after_second_sighting(input, candidate)
}

/// An untaken pool network: live while its daemon runs (the reaper runs
/// in the only daemon of this home, so another instance has died); then
/// an orphan, unless something is attached or a run that may have taken
/// it cannot be read.
fn decide_untaken_pool(input: &SweepInput<'_>, candidate: &Candidate, owner: &str) -> Decision {
    if owner == input.daemon {
        return Decision::Keep(KeepReason::Pool);
    }
    if let Some(attached) = candidate.attached.first() {
        return Decision::Keep(KeepReason::ForeignAttachment(attached.clone()));
    }
    if input.pool_takers_unknown {
        return Decision::Keep(KeepReason::PoolTakerUnknown);
    }
    after_second_sighting(input, candidate)
}

fn after_second_sighting(input: &SweepInput<'_>, candidate: &Candidate) -> Decision {
    if !input.force {
        let seen_long_enough = input
            .first_seen
            .get(&candidate.key)
            .is_some_and(|first| input.now - *first >= input.second_sighting_after);
        if !seen_long_enough {
            return Decision::Keep(KeepReason::AwaitingSecondSighting);
        }
    }
    Decision::Remove
}

/// The run a container belongs to, from its name (`run_<hex>` or
/// `run_<hex>-<service>`).
pub fn run_of_container(name: &str) -> Option<RunId> {
    let name = name.trim_start_matches('/');
    name.get(..16)
        .and_then(|prefix| prefix.parse().ok())
        .filter(|_| name.len() == 16 || name.as_bytes()[16] == b'-')
}

/// Whether a decision judges its object an orphan (removed now, or once
/// seen again).
pub fn is_orphaned(decision: &Decision) -> bool {
    matches!(
        decision,
        Decision::Remove | Decision::Keep(KeepReason::AwaitingSecondSighting)
    )
}

/// The first-seen map after this sweep. Only objects judged orphaned are
/// sighted: they keep their first sighting or are stamped `now`. Objects
/// seen live (or protected) lose theirs, so a transient liveness miss
/// always waits the full second-sighting period; vanished ones are dropped.
pub fn next_first_seen<'a>(
    judged: impl IntoIterator<Item = (&'a Candidate, &'a Decision)>,
    previous: &BTreeMap<ObjectKey, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> BTreeMap<ObjectKey, DateTime<Utc>> {
    judged
        .into_iter()
        .filter(|(_, decision)| is_orphaned(decision))
        .map(|(c, _)| (c.key.clone(), previous.get(&c.key).copied().unwrap_or(now)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use moat_core::RuntimeKind;

    const HOME: &str = "aaaaaaaaaaaa";
    const DAEMON: &str = "100-0123456789ab";

    fn run(n: u8) -> RunId {
        format!("run_{n:012x}").parse().unwrap()
    }

    fn network(run_id: &RunId, home: Option<&str>, attached: &[&str]) -> Candidate {
        Candidate {
            key: ObjectKey {
                runtime: RuntimeKind::Docker,
                kind: ObjectKind::Network,
                name: run_id.network_name(),
            },
            run_id: Some(run_id.clone()),
            home: home.map(String::from),
            attached: attached.iter().map(|s| s.to_string()).collect(),
            running: false,
            pool_owner: None,
        }
    }

    struct Case {
        name: &'static str,
        candidate: Candidate,
        live: Vec<RunId>,
        first_seen_secs_ago: Option<i64>,
        force: bool,
        expect: Decision,
    }

    #[test]
    fn decision_table() {
        let r1 = run(1);
        let r2 = run(2);
        let own = Some(HOME);
        let cases = vec![
            Case {
                name: "live run is kept even when seen long ago and forced",
                candidate: network(&r1, own, &[]),
                live: vec![r1.clone()],
                first_seen_secs_ago: Some(3600),
                force: true,
                expect: Decision::Keep(KeepReason::Live),
            },
            Case {
                name: "first sighting waits",
                candidate: network(&r1, own, &[]),
                live: vec![],
                first_seen_secs_ago: None,
                force: false,
                expect: Decision::Keep(KeepReason::AwaitingSecondSighting),
            },
            Case {
                name: "second sighting under 60 s waits",
                candidate: network(&r1, own, &[]),
                live: vec![],
                first_seen_secs_ago: Some(59),
                force: false,
                expect: Decision::Keep(KeepReason::AwaitingSecondSighting),
            },
            Case {
                name: "second sighting at 60 s is removed",
                candidate: network(&r1, own, &[]),
                live: vec![],
                first_seen_secs_ago: Some(60),
                force: false,
                expect: Decision::Remove,
            },
            Case {
                name: "force skips the two-sweep wait",
                candidate: network(&r1, own, &[]),
                live: vec![],
                first_seen_secs_ago: None,
                force: true,
                expect: Decision::Remove,
            },
            Case {
                name: "another MOAT_HOME's object is never touched",
                candidate: network(&r1, Some("bbbbbbbbbbbb"), &[]),
                live: vec![],
                first_seen_secs_ago: Some(3600),
                force: true,
                expect: Decision::Keep(KeepReason::ForeignHome),
            },
            Case {
                name: "legacy unlabelled object matched by name is reclaimable",
                candidate: network(&r1, None, &[]),
                live: vec![],
                first_seen_secs_ago: Some(120),
                force: false,
                expect: Decision::Remove,
            },
            Case {
                name: "network with a live container of another run is never touched",
                candidate: network(&r1, own, &[r2.as_str()]),
                live: vec![r2.clone()],
                first_seen_secs_ago: Some(3600),
                force: true,
                expect: Decision::Keep(KeepReason::ForeignAttachment(r2.to_string())),
            },
            Case {
                name: "network with a foreign, non-moat container is never touched",
                candidate: network(&r1, own, &["postgres"]),
                live: vec![],
                first_seen_secs_ago: Some(3600),
                force: true,
                expect: Decision::Keep(KeepReason::ForeignAttachment("postgres".into())),
            },
            Case {
                name: "network with only its own dead run's containers is reclaimable",
                candidate: network(&r1, own, &[r1.as_str(), &format!("{r1}-redis")]),
                live: vec![],
                first_seen_secs_ago: Some(61),
                force: false,
                expect: Decision::Remove,
            },
            Case {
                name: "object without a run id is not a run object",
                candidate: Candidate {
                    run_id: None,
                    ..network(&r1, own, &[])
                },
                live: vec![],
                first_seen_secs_ago: Some(3600),
                force: true,
                expect: Decision::Keep(KeepReason::NotARunObject),
            },
        ];
        let now = Utc::now();
        for case in cases {
            let live: HashSet<RunId> = case.live.into_iter().collect();
            let first_seen: BTreeMap<_, _> = case
                .first_seen_secs_ago
                .map(|ago| (case.candidate.key.clone(), now - Duration::seconds(ago)))
                .into_iter()
                .collect();
            let candidates = [case.candidate];
            let input = SweepInput {
                candidates: &candidates,
                live: &live,
                first_seen: &first_seen,
                now,
                force: case.force,
                second_sighting_after: Duration::seconds(60),
                home: HOME,
                daemon: DAEMON,
                pool_takers_unknown: false,
            };
            assert_eq!(decide(&input), vec![case.expect], "{}", case.name);
        }
    }

    fn pool_network(owner: &str, taken_by: Option<&RunId>, attached: &[&str]) -> Candidate {
        Candidate {
            key: ObjectKey {
                runtime: RuntimeKind::Docker,
                kind: ObjectKind::Network,
                name: "moat-pool-0123456789ab".into(),
            },
            run_id: taken_by.cloned(),
            home: Some(HOME.into()),
            attached: attached.iter().map(|s| s.to_string()).collect(),
            running: false,
            pool_owner: Some(owner.into()),
        }
    }

    #[test]
    fn pool_networks_belong_to_their_daemon_until_taken_then_to_their_run() {
        let r1 = run(1);
        let dead = "99-ffffffffffff";
        // (case, candidate, live runs, takers unknown, decision)
        let cases: Vec<(&str, Candidate, Vec<RunId>, bool, Decision)> = vec![
            (
                "untaken, of the running daemon",
                pool_network(DAEMON, None, &[]),
                vec![],
                false,
                Decision::Keep(KeepReason::Pool),
            ),
            (
                "untaken, of a dead daemon",
                pool_network(dead, None, &[]),
                vec![],
                false,
                Decision::Remove,
            ),
            (
                "untaken, unlabelled owner",
                pool_network("", None, &[]),
                vec![],
                false,
                Decision::Remove,
            ),
            (
                "untaken, of a dead daemon, a run record unreadable",
                pool_network(dead, None, &[]),
                vec![],
                true,
                Decision::Keep(KeepReason::PoolTakerUnknown),
            ),
            (
                "untaken, of a dead daemon, something attached",
                pool_network(dead, None, &["postgres"]),
                vec![],
                false,
                Decision::Keep(KeepReason::ForeignAttachment("postgres".into())),
            ),
            (
                "taken by a live run, of a dead daemon",
                pool_network(dead, Some(&r1), &[r1.as_str()]),
                vec![r1.clone()],
                false,
                Decision::Keep(KeepReason::Live),
            ),
            (
                "taken by a dead run, of the running daemon",
                pool_network(DAEMON, Some(&r1), &[]),
                vec![],
                false,
                Decision::Remove,
            ),
        ];
        let now = Utc::now();
        for (name, candidate, live, pool_takers_unknown, expect) in cases {
            let live: HashSet<RunId> = live.into_iter().collect();
            let candidates = [candidate];
            let input = SweepInput {
                candidates: &candidates,
                live: &live,
                first_seen: &BTreeMap::new(),
                now,
                force: true,
                second_sighting_after: Duration::seconds(60),
                home: HOME,
                daemon: DAEMON,
                pool_takers_unknown,
            };
            assert_eq!(decide(&input), vec![expect], "{name}");
        }
    }

    #[test]
    fn container_names_map_to_runs() {
        assert_eq!(
            run_of_container("run_0123456789ab"),
            Some("run_0123456789ab".parse().unwrap())
        );
        assert_eq!(
            run_of_container("/run_0123456789ab-postgres"),
            Some("run_0123456789ab".parse().unwrap())
        );
        assert_eq!(run_of_container("run_0123456789abc"), None);
        assert_eq!(run_of_container("web"), None);
    }

    #[test]
    fn first_sightings_are_kept_and_vanished_objects_forgotten() {
        let now = Utc::now();
        let earlier = now - Duration::seconds(90);
        let kept = network(&run(1), Some(HOME), &[]);
        let vanished = network(&run(2), Some(HOME), &[]);
        let new = network(&run(3), Some(HOME), &[]);
        let previous = BTreeMap::from([(kept.key.clone(), earlier), (vanished.key.clone(), earlier)]);
        let waiting = Decision::Keep(KeepReason::AwaitingSecondSighting);
        let next = next_first_seen([(&kept, &Decision::Remove), (&new, &waiting)], &previous, now);
        assert_eq!(next, BTreeMap::from([(kept.key, earlier), (new.key, now)]));
    }

    /// The attack: a run is briefly missed by the live set (a transient
    /// read), sighted as an orphan, then seen live again. Its sighting must
    /// be cleared, so a second miss later waits the full period again
    /// instead of removing a live run's objects at once.
    #[test]
    fn sightings_of_live_objects_are_never_recorded_and_are_cleared() {
        let now = Utc::now();
        let candidate = network(&run(1), Some(HOME), &[]);
        let missed = Decision::Keep(KeepReason::AwaitingSecondSighting);
        let sighted = next_first_seen([(&candidate, &missed)], &BTreeMap::new(), now - Duration::seconds(600));
        assert_eq!(sighted.len(), 1);
        let live = Decision::Keep(KeepReason::Live);
        let cleared = next_first_seen([(&candidate, &live)], &sighted, now - Duration::seconds(300));
        assert!(cleared.is_empty(), "a live object keeps no sighting");
        let live = HashSet::new();
        let candidates = [candidate.clone()];
        let input = SweepInput {
            candidates: &candidates,
            live: &live,
            first_seen: &cleared,
            now,
            force: false,
            second_sighting_after: Duration::seconds(60),
            home: HOME,
            daemon: DAEMON,
            pool_takers_unknown: false,
        };
        assert_eq!(decide(&input), vec![missed], "the second miss waits again");
    }
}
